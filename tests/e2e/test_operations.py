"""Running the server: --check, broken configs, SIGHUP reloads, a second server on the same
port (--join), SIGTERM drains."""

import re
import shutil
import signal
import smtplib
import socket
import subprocess
import time
import urllib.request

import pytest

from conftest import (
    BINARY,
    IO_TIMEOUT,
    SHIPPED_CONFIG,
    TEST_PLUGINS_BINARY,
    Server,
    check_delivered,
    free_port,
    dot_stuff,
    make_message,
    server_env,
)

SENDER = "sender@client.test"
RCPT = "rcpt@example.test"


def run_binary(args, cwd, deadline=30, binary=BINARY):
    return subprocess.run(
        [str(binary)] + args,
        cwd=cwd,
        env=server_env(cwd),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=deadline,
    )


def deliver(server, subject, client=None):
    msg = make_message(subject, ["x"])
    c = client or server.connect()
    if client is None:
        c.ehlo()
    c.transaction(SENDER, [RCPT], msg, 250, "2.0.0")
    return c, msg


# ---------------------------------------------------------------------------------------------
# --check and broken configs


def test_check_prints_the_plugin_chain(make_server):
    srv = make_server(
        start=False,
        plugins=["misbehave deny mail", "rcpt_ok", "misbehave:1 panic rcpt", "queue/maildir {maildir}"],
    )
    # misbehave is a test-only plugin: the build that has it.
    r = run_binary(["--config", str(srv.cfg), "--check"], srv.dir, binary=TEST_PLUGINS_BINARY)
    assert r.returncode == 0, r.stderr
    assert f"config {srv.cfg} is valid" in r.stdout
    chains = dict(re.findall(r"^  (\S+)\s+(.+)$", r.stdout, re.M))
    assert chains == {
        "mail": "misbehave",
        "rcpt": "rcpt_ok -> misbehave:1",
        "queue": "queue/maildir",
    }, r.stdout


def test_check_of_shipped_config(tmp_path):
    # A copy: building queue/maildir creates its ./Maildir, which must not land in the repo.
    shutil.copytree(SHIPPED_CONFIG, tmp_path / "config")
    r = run_binary(["--config", "config", "--check"], tmp_path)
    assert r.returncode == 0, r.stderr
    assert "config config is valid" in r.stdout
    chains = dict(re.findall(r"^  (\S+)\s+(.+)$", r.stdout, re.M))
    assert "rcpt_ok" in chains.get("rcpt", "").split(" -> "), r.stdout
    assert "queue/maildir" in chains.get("queue", "").split(" -> "), r.stdout
    # Every plugin of the shipped chain shows up in some hook's chain.
    listed = {p for chain in chains.values() for p in chain.split(" -> ")}
    for line in (SHIPPED_CONFIG / "plugins").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and not line.startswith("$"):
            assert line.split()[0] in listed, (line, r.stdout)


BROKEN = [
    ("plugins", "rcpt_ok\n# a comment\nno_such_plugin\nqueue/maildir {maildir}\n", 3, "unknown plugin 'no_such_plugin'"),
    # A plugin's own argument error (misbehave's, before it became test-only).
    ("plugins", "rcpt_ok\nnoop_counter frobnicate\n", 2, "noop_counter"),
    ("plugins", "rcpt_ok\nqueue/maildir\n", 2, "maildir"),
    ("databytes", "# size\n10MB\n", 2, "10MB"),
    ("databytes", "-1\n", 1, "-1"),
    ("timeout", "0\n", 1, "out of range"),
    ("bare_newline", "sometimes\n", 1, "sometimes"),
    ("size_threshold", "1\n2\n", 2, "takes one value"),
    ("listen", "127.0.0.1:99999\n", 1, "99999"),
]


@pytest.mark.parametrize("file,content,line,reason", BROKEN, ids=[f"{b[0]}-{i}" for i, b in enumerate(BROKEN)])
def test_broken_config_names_file_and_line(make_server, file, content, line, reason):
    srv = make_server(start=False)
    (srv.cfg / file).write_text(content.replace("{maildir}", str(srv.maildir.path)))
    where = f"{srv.cfg}/{file}:{line}: "
    for args in (["--check"], []):
        r = run_binary(["--config", str(srv.cfg), "--listen", f"127.0.0.1:{srv.port}"] + args, srv.dir)
        assert r.returncode == 1, (args, r.stdout, r.stderr)
        assert where in r.stderr, f"{where!r} not in {r.stderr!r}"
        assert reason in r.stderr, r.stderr
        assert "is valid" not in r.stdout
    # It refused to start: nothing listens.
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", srv.port), timeout=5)


def test_unknown_argument_exits_2(tmp_path):
    r = run_binary(["--frobnicate"], tmp_path)
    assert r.returncode == 2
    assert "unknown argument" in r.stderr


# ---------------------------------------------------------------------------------------------
# SIGHUP


def test_sighup_changed_plugins_affect_new_connections(make_server):
    server = make_server(binary=TEST_PLUGINS_BINARY)  # the new chain has misbehave
    old = server.connect()
    old.ehlo()
    server.set_plugins(["misbehave deny mail", "rcpt_ok", f"queue/maildir {server.maildir.path}"])
    server.set("databytes", "123456")
    server.signal(signal.SIGHUP)
    server.wait_log("config reloaded")
    new = server.connect()
    r = new.ehlo()
    assert "SIZE 123456" in r.lines, r
    new.cmd(f"MAIL FROM:<{SENDER}>", 550, "5.7.0")
    new.cmd("QUIT", 221)
    # A session that started before the reload keeps the config it started with.
    deliver(server, "old session", client=old)
    old.cmd("QUIT", 221)
    assert len(server.maildir.messages()) == 1


def test_sighup_with_broken_config_keeps_the_old_one(make_server):
    server = make_server(binary=TEST_PLUGINS_BINARY)  # the last chain has misbehave
    server.set_plugins(["rcpt_ok", "no_such_plugin", f"queue/maildir {server.maildir.path}"])
    server.signal(signal.SIGHUP)
    server.wait_log("reload refused, old config kept")
    assert re.search(r"reload refused, old config kept: \S*plugins:2: unknown plugin", server.log())
    c, msg = deliver(server, "after a bad reload")
    c.cmd("QUIT", 221)
    check_delivered(server.maildir.only(), SENDER, [RCPT], msg)
    # A broken setting file is refused the same way.
    server.set_plugins(["rcpt_ok", f"queue/maildir {server.maildir.path}"])
    server.set("databytes", "lots")
    server.signal(signal.SIGHUP)
    server.wait_log("reload refused, old config kept", count=2)
    c = server.connect()
    assert "SIZE 52428800" in c.ehlo().lines
    c.cmd("QUIT", 221)
    # Fixed again: the next reload takes.
    server.set("databytes", "4242")
    server.set_plugins(["misbehave deny mail", "rcpt_ok", f"queue/maildir {server.maildir.path}"])
    server.signal(signal.SIGHUP)
    server.wait_log("config reloaded")
    c = server.connect()
    assert "SIZE 4242" in c.ehlo().lines
    c.cmd(f"MAIL FROM:<{SENDER}>", 550, "5.7.0")
    c.cmd("QUIT", 221)
    assert server.proc.poll() is None


# ---------------------------------------------------------------------------------------------
# A second server on the same port


def test_second_server_on_same_port_fails_unless_join(make_server):
    first = make_server(name="first")
    second = Server(first.dir.parent / "second")
    second.port = first.port
    r = run_binary(second.args()[1:], second.dir)
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert f"cannot listen on 127.0.0.1:{first.port}" in r.stderr
    assert "--join" in r.stderr
    # The first server did not notice.
    c, _ = deliver(first, "first still serves")
    c.cmd("QUIT", 221)
    # With --join both serve the port; stop the first and the second takes every connection.
    second = make_server(name="second-join", start=False, extra_args=["--join"])
    second.port = first.port
    second.start()
    assert first.stop() == 0
    c, msg = deliver(second, "served by the joined server")
    c.cmd("QUIT", 221)
    check_delivered(second.maildir.only(), SENDER, [RCPT], msg)
    assert len(first.maildir.messages()) == 1



def connections_total(metrics_port):
    """ringsmtpd_connections_total from a scrape of the metrics listener."""
    url = f"http://127.0.0.1:{metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=IO_TIMEOUT) as r:
        text = r.read().decode()
    return float(re.search(r"^ringsmtpd_connections_total (\S+)$", text, re.M).group(1))


def test_join_shares_the_metrics_port_and_keeps_it(make_server):
    """An upgrade with --join: the new process binds the metrics address the old one holds
    (SO_REUSEPORT, as the SMTP port); once the old one has drained, scrapes reach the new one.
    Without --join, a second process refuses the taken metrics address."""
    mport = free_port()
    first = make_server(name="first", settings={"metrics": f"127.0.0.1:{mport}"})
    with smtplib.SMTP("127.0.0.1", first.port, timeout=IO_TIMEOUT) as s:
        s.sendmail("a@example.org", ["user@example.test"], make_message("old", ["hi"]))
    assert connections_total(mport) == 1

    alone = Server(first.dir.parent / "alone", settings={"metrics": f"127.0.0.1:{mport}"})
    r = run_binary(alone.args()[1:], alone.dir)
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert f"metrics listener 127.0.0.1:{mport}" in r.stderr, r.stderr

    second = make_server(name="second", start=False, extra_args=["--join"],
                         settings={"metrics": f"127.0.0.1:{mport}"})
    second.port = first.port
    second.start()
    assert first.stop() == 0
    # Only the new process is left on the metrics port: its counters start at zero.
    assert connections_total(mport) == 0
    with smtplib.SMTP("127.0.0.1", second.port, timeout=IO_TIMEOUT) as s:
        s.sendmail("a@example.org", ["user@example.test"], make_message("new", ["hi"]))
    assert connections_total(mport) == 1


# ---------------------------------------------------------------------------------------------
# SIGTERM


def test_sigterm_with_idle_client(server):
    c = server.connect()
    c.ehlo()
    c.cmd(f"MAIL FROM:<{SENDER}>", 250)
    server.signal(signal.SIGTERM)
    r = c.reply()  # the client said nothing: the server speaks first
    assert r.code == 421 and r.enhanced() == "4.3.2", r
    c.read_until_closed()
    assert server.wait_exit() == 0
    server.maildir.assert_empty()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", server.port), timeout=5)


def test_sigterm_lets_a_session_in_conversation_reach_its_quit(server):
    """The drain's grace (DRAIN_GRACE, 2 s, src/worker.rs): a client that goes on right after
    the SIGTERM finishes its transaction and QUITs, as during an upgrade with --join; only
    after the grace is a session told 421 (test_sigterm_with_idle_client)."""
    c = server.connect()
    c.ehlo()
    server.signal(signal.SIGTERM)
    server.wait_log("shutting down")
    _, msg = deliver(server, "sent during the grace", client=c)
    c.cmd("QUIT", 221)
    assert server.wait_exit() == 0
    check_delivered(server.maildir.only(), SENDER, [RCPT], msg)


def test_sigterm_during_data_lets_the_transaction_finish(server):
    idle = server.connect()
    idle.ehlo()
    busy = server.connect()
    busy.ehlo()
    busy.start_data(SENDER, [RCPT])
    msg = make_message("finished during shutdown", ["line %d" % i for i in range(2000)])
    payload = dot_stuff(msg)
    busy.send(payload[:10000])
    server.signal(signal.SIGTERM)
    server.wait_log("shutting down")
    r = idle.reply()
    assert r.code == 421 and r.enhanced() == "4.3.2", r
    busy.send(payload[10000:])
    busy.expect(250, "2.0.0")
    # After the transaction, the next thing is the 421 (the server is going away): the
    # server says it at once, without waiting for another command.
    r = busy.reply()
    assert r.code == 421 and r.enhanced() == "4.3.2", r
    assert server.wait_exit() == 0
    check_delivered(server.maildir.only(), SENDER, [RCPT], msg)


def test_sigterm_drain_deadline_cuts_a_stalled_transaction(make_server):
    server = make_server(settings={"shutdown_timeout": 1})
    c = server.connect()
    c.ehlo()
    c.start_data(SENDER, [RCPT])
    c.send(b"Subject: never finished\r\n\r\npart")
    server.signal(signal.SIGTERM)
    assert server.wait_exit() == 0
    try:
        rest = c.read_until_closed()
    except OSError:
        rest = b""
    assert b"250" not in rest
    server.maildir.assert_empty()


def test_sigint_also_drains(server):
    c = server.connect()
    c.ehlo()
    server.signal(signal.SIGINT)
    r = c.reply()
    assert r.code == 421 and r.enhanced() == "4.3.2", r
    assert server.wait_exit() == 0


def test_sigterm_does_not_wait_for_a_silent_proxy_connection(make_server):
    server = make_server(proxy=True, threads=1)
    s = socket.create_connection(("127.0.0.1", server.proxy_port), timeout=IO_TIMEOUT)
    # A session on the plain listener of the same (only) worker: by the time it has its
    # banner, the earlier PROXY connection has been accepted too.
    c = server.connect()
    c.cmd("QUIT", 221)
    time.sleep(0.3)
    started = time.monotonic()
    server.signal(signal.SIGTERM)
    assert server.wait_exit() == 0
    took = time.monotonic() - started
    s.close()
    # Nothing to drain there: no session, no transaction. 5 s is generous for "at once".
    assert took < 5, f"exit took {took:.1f}s after SIGTERM"
