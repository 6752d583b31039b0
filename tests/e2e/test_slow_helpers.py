"""Slow helpers never starve deliveries (issue 17): checkpassword programs that hang fill the
helpers' own pool (4 threads per worker) and queue behind it, more of them than the helpers'
and the blocking pool's threads together, while a message is still spooled, written into the
Maildir and fsync'd, and answered 250. Were the helpers on the blocking pool, the delivery
would wait for their release, which comes only after it (the client's deadline bounds that)."""

import base64

from conftest import IO_TIMEOUT, make_message, send_message, wait_for

HELPER_THREADS = 4  # src/services.rs
BLOCKING_THREADS = 4  # src/runtime.rs


def test_hanging_checkpassword_programs_do_not_hold_up_a_delivery(make_server, tmp_path):
    started = tmp_path / "started"
    started.mkdir()
    release = tmp_path / "release"
    checkpw = tmp_path / "checkpw"
    # Says it started, then waits for the release; then accepts.
    checkpw.write_text(
        "#!/bin/sh\n"
        f"touch {started}/$$\n"
        f"while [ ! -e {release} ]; do sleep 0.05; done\n"
        'exec "$@"\n'
    )
    checkpw.chmod(0o755)
    srv = make_server(threads=1, settings={"tls_before_auth": 0, "plugin_timeout": 300, "size_threshold": 0},
                      plugins=[f"auth/auth_checkpassword checkpw {checkpw} true /bin/true timeout 250",
                               "rcpt_ok", "queue/maildir {maildir}"])
    waiting = HELPER_THREADS + BLOCKING_THREADS + 2
    clients = []
    try:
        token = base64.b64encode(b"\0joe\0pw").decode()
        for _ in range(waiting):
            c = srv.connect()
            c.ehlo()
            c.send(f"AUTH PLAIN {token}\r\n".encode())
            clients.append(c)
        wait_for(lambda: len(list(started.iterdir())) >= HELPER_THREADS, IO_TIMEOUT,
                 "the checkpassword programs to start")

        reply = send_message(srv, ["rcpt@example.test"], make_message("past the helpers", ["hello"] * 100))
        assert reply.code == 250, reply
        srv.maildir.wait_count(1)
        # At most the helpers' pool ran at once; the others still wait in its queue.
        assert len(list(started.iterdir())) == HELPER_THREADS
    finally:
        release.touch()
    for c in clients:
        c.expect(235)
        c.close()
    assert len(list(started.iterdir())) == waiting
