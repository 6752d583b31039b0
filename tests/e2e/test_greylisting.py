"""greylisting on the state store: the embedded store (kept across a restart) and a real
redis-server on a free loopback port, shared by two ringsmtpd processes, and stopped mid-test.

black_timeout is 2 s so a retry "after black_timeout" is a short sleep; nothing here asserts on
how long anything took.
"""

import time

from conftest import free_port
from private_redis import redis_server  # noqa: F401 (a fixture)

BLACK = 2
GREY_LINE = f"greylisting black_timeout {BLACK} grey_timeout 600"
MESSAGE = b"From: a@example.org\r\nSubject: grey\r\n\r\nhello\r\n"


def plugins(*grey):
    return [*grey, "rcpt_ok", "queue/maildir {maildir}"]


def mail_from(srv, sender):
    """A fresh session's reply to MAIL FROM."""
    c = srv.connect()
    c.ehlo()
    r = c.cmd(f"MAIL FROM:<{sender}>")
    c.cmd("QUIT", 221)
    return r


def deliver(srv, sender):
    """A whole transaction that must be accepted, and its message in the Maildir."""
    before = len(srv.maildir.files())
    c = srv.connect()
    c.ehlo()
    c.transaction(sender, ["user@example.test"], MESSAGE, 250)
    c.cmd("QUIT", 221)
    srv.maildir.wait_count(before + 1)


def restart(srv):
    """Starts a stopped server again, its earlier log set aside (start() waits for a new
    "listening on" line)."""
    srv.logfile.rename(srv.logfile.with_name("server.log.1"))
    srv.start()


def assert_greylisted(r):
    assert r.code == 451, r
    assert r.enhanced() == "4.7.1", r
    assert "try again in" in r.text, r


def sleep_past_black(first_attempt):
    left = first_attempt + BLACK + 0.5 - time.monotonic()
    if left > 0:
        time.sleep(left)


def test_embedded_first_attempt_retry_pass_and_restart(make_server):
    srv = make_server(plugins=plugins(GREY_LINE))
    first = time.monotonic()
    assert_greylisted(mail_from(srv, "a@example.org"))
    # retried at once: still within black_timeout
    assert_greylisted(mail_from(srv, "a@example.org"))
    sleep_past_black(first)
    deliver(srv, "a@example.org")
    # whitelisted: any sender from this IP passes at once
    assert mail_from(srv, "other@example.net").code == 250
    assert "pass: updated grey->white" in srv.log()

    # the whitelist survives a restart (saved at stop, read at start)
    assert srv.stop() == 0
    assert (srv.dir / "state" / "store.db").is_file()
    restart(srv)
    assert mail_from(srv, "third@example.com").code == 250
    assert "pass: white" in srv.log()


def test_embedded_damaged_file_stops_the_start(make_server):
    srv = make_server(plugins=plugins(GREY_LINE))
    assert_greylisted(mail_from(srv, "a@example.org"))
    assert srv.stop() == 0
    store = srv.dir / "state" / "store.db"
    data = bytearray(store.read_bytes())
    data[-9] ^= 0x55
    store.write_bytes(bytes(data))
    check = srv.check_config()
    assert check.returncode != 0
    assert str(store) in check.stderr or "state/store.db" in check.stderr, check.stderr
    assert "move it aside" in check.stderr, check.stderr
    store.rename(store.with_suffix(".bad"))
    restart(srv)
    # rebuilt empty: the triplet is new again
    assert_greylisted(mail_from(srv, "a@example.org"))


def test_two_processes_share_one_redis(make_server, redis_server):
    settings = {"state_store": f"redis 127.0.0.1:{redis_server.port} timeout 2"}
    a = make_server(plugins=plugins(GREY_LINE), settings=settings)
    b = make_server(plugins=plugins(GREY_LINE), settings=settings)
    first = time.monotonic()
    assert_greylisted(mail_from(a, "a@example.org"))
    # the retry reaches the other process: it knows the triplet (still black)
    assert_greylisted(mail_from(b, "a@example.org"))
    assert b"4:grey9:127.0.0.1" in b"".join(redis_server.keys())
    sleep_past_black(first)
    deliver(b, "a@example.org")
    # whitelisted for both
    assert mail_from(a, "other@example.net").code == 250
    keys = redis_server.keys()
    assert b"11:greylisting5:white9:127.0.0.1" in keys, keys


def test_redis_stopped_mid_test_fails_open(make_server, redis_server):
    settings = {"state_store": f"redis unix:{redis_server.sock} timeout 2"}
    srv = make_server(plugins=plugins(GREY_LINE + " sender 1"), settings=settings)
    assert_greylisted(mail_from(srv, "a@example.org"))
    redis_server.stop()
    # new triplets pass while Redis is down: the plugin's fail policy, no hang
    for i in range(4):
        assert mail_from(srv, f"new{i}@example.org").code == 250
    log = srv.log()
    assert log.count("state store unavailable") == 1, log[-3000:]
    assert "letting mail through" in log


def test_redis_down_with_on_store_error_defer(make_server, tmp_path):
    closed = free_port()
    settings = {"state_store": f"redis 127.0.0.1:{closed} timeout 1"}
    srv = make_server(plugins=plugins(GREY_LINE + " on_store_error defer"), settings=settings)
    r = mail_from(srv, "a@example.org")
    assert (r.code, r.enhanced()) == (451, "4.3.0"), r


def test_hostile_sender_keys_on_redis(make_server, redis_server):
    """A sender full of RESP syntax stays one key part: the triplet works and Redis holds
    exactly the length-prefixed key (nothing injected, nothing split)."""
    settings = {"state_store": f"redis 127.0.0.1:{redis_server.port}"}
    srv = make_server(plugins=plugins(GREY_LINE + " sender 1 remote_ip 0"), settings=settings)
    sender = '"*1$4:DEL 9:x"@example.org'
    first = time.monotonic()
    assert_greylisted(mail_from(srv, sender))
    expected = b"11:greylisting4:grey" + str(len(sender)).encode() + b":" + sender.lower().encode()
    assert redis_server.keys() == [expected]
    # a sender that would collide if the parts were merely joined is a triplet of its own
    assert_greylisted(mail_from(srv, "x@example.org"))
    sleep_past_black(first)
    assert mail_from(srv, sender).code == 250
