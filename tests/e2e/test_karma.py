"""karma on the state store: naughty behaviour (three refused recipients) sends the client's
IP to the penalty box, so its next connection is refused at connect; the box is shared by two
processes on one real redis-server; `ringsmtpd karma capture/release` changes what the next
connection gets (live with Redis, on the embedded store only while no server runs); Redis
stopped: clients pass unjudged, one log line.
"""

import subprocess

from conftest import BINARY, server_env
from private_redis import redis_server  # noqa: F401 (a fixture)

KARMA = "karma reject connect"
MESSAGE = b"From: a@example.org\r\nSubject: karma\r\n\r\nhello\r\n"


def plugins(karma=KARMA):
    return [karma, "rcpt_ok", "queue/maildir {maildir}"]


def naughty_session(srv):
    """Three recipients refused by rcpt_ok (relaying denied): three strikes."""
    c = srv.connect()
    c.ehlo()
    c.cmd("MAIL FROM:<a@example.org>", 250)
    for i in range(3):
        c.cmd(f"RCPT TO:<x{i}@elsewhere.example>", 550)
    c.cmd("QUIT", 221)
    c.close()


def assert_boxed(srv):
    """The next connection: 550 5.7.1 with the box's text at connect, then closed."""
    c = srv.connect(banner=False)
    r = c.reply()
    assert (r.code, r.enhanced()) == (550, "5.7.1"), r
    assert "You were naughty. You cannot connect for" in r.text, r
    c.read_until_closed()
    c.close()


def assert_welcome(srv):
    c = srv.connect()
    c.ehlo()
    c.transaction("a@example.org", ["user@example.test"], MESSAGE, 250)
    c.cmd("QUIT", 221)
    c.close()


def karma_cmd(srv, *words):
    return subprocess.run(
        [str(BINARY), "karma", "--config", str(srv.cfg), *words],
        cwd=srv.dir,
        env=server_env(srv.dir),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_naughty_client_is_boxed_on_the_embedded_store(make_server):
    srv = make_server(plugins=plugins())
    assert_welcome(srv)
    naughty_session(srv)
    srv.wait_log("negative, sent to penalty box")
    assert_boxed(srv)
    assert "fail, in the penalty box" in srv.log()
    # the command keeps off a running server's store file
    busy = karma_cmd(srv, "release", "127.0.0.1")
    assert busy.returncode == 1 and "a running ringsmtpd" in busy.stderr, busy
    assert srv.stop() == 0
    shown = karma_cmd(srv, "show", "127.0.0.1")
    assert shown.returncode == 0, shown
    row = shown.stdout.splitlines()[1].split()
    assert row[0] == "127.0.0.1" and row[-3:] == ["1", "0", "3"], shown.stdout
    released = karma_cmd(srv, "release", "127.0.0.1")
    assert released.returncode == 0, released
    srv.logfile.rename(srv.logfile.with_name("server.log.1"))
    srv.start()
    assert_welcome(srv)
    assert srv.stop() == 0
    captured = karma_cmd(srv, "capture", "127.0.0.1")
    assert captured.returncode == 0, captured
    listed = karma_cmd(srv, "list")
    assert "127.0.0.1" in listed.stdout, listed
    srv.logfile.rename(srv.logfile.with_name("server.log.2"))
    srv.start()
    assert_boxed(srv)


def test_two_processes_share_the_penalty_box_on_redis(make_server, redis_server):
    settings = {"state_store": f"redis 127.0.0.1:{redis_server.port} timeout 2"}
    a = make_server(plugins=plugins(), settings=settings)
    b = make_server(plugins=plugins(), settings=settings)
    naughty_session(a)
    a.wait_log("negative, sent to penalty box")
    assert_boxed(b)
    assert b"5:karma9:127.0.0.17:penalty" in redis_server.keys()
    # released live, while both run; captured again from the command line
    released = karma_cmd(a, "release", "127.0.0.1")
    assert released.returncode == 0, released
    assert_welcome(b)
    captured = karma_cmd(b, "capture", "127.0.0.1", "0.5")
    assert captured.returncode == 0, captured
    assert_boxed(a)
    listed = karma_cmd(a, "list")
    assert listed.returncode == 1 and "redis-cli" in listed.stderr, listed


def test_redis_stopped_lets_clients_through_with_one_log_line(make_server, redis_server):
    settings = {"state_store": f"redis unix:{redis_server.sock} timeout 2"}
    srv = make_server(plugins=plugins(), settings=settings)
    naughty_session(srv)
    srv.wait_log("negative, sent to penalty box")
    redis_server.stop()
    for _ in range(3):
        assert_welcome(srv)
    naughty_session(srv)
    log = srv.log()
    assert log.count("state store unavailable") == 1, log[-3000:]
    assert "letting clients through unjudged" in log


def test_default_reject_naughty_leaves_the_refusal_to_naughty(make_server):
    """karma's default `reject naughty`: the boxed client is only marked at connect, and the
    naughty plugin refuses it at the step it is told to (MAIL here), with karma's text."""
    srv = make_server(plugins=plugins("karma") + ["naughty reject mail"])
    naughty_session(srv)
    srv.wait_log("negative, sent to penalty box")
    c = srv.connect()
    c.ehlo()
    r = c.cmd("MAIL FROM:<a@example.org>")
    assert r.code == 550 and r.enhanced() == "5.7.1", r
    assert "You were naughty." in r.text, r
    c.read_until_closed()
    c.close()
