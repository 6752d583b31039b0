"""A broken plugin hurts only the session that triggers it: a panic or a hang in one session
never stops another one on the same core (--threads 1) from delivering.

The faults come from `misbehave`, which only the test build (`ringsmtpd-test-plugins`) has: the
last test checks that the production binary refuses it."""

import select
import time

from conftest import (
    BINARY,
    IO_TIMEOUT,
    TEST_PLUGINS_BINARY,
    check_delivered,
    dot_stuff,
    make_message,
)

SENDER = "sender@client.test"
RCPT = "rcpt@example.test"
# rcpt_ok accepts local domains (and the chain stops there); for any other domain it declines
# (reject 0), so the misbehaving plugin after it runs.
PLUGINS = ["rcpt_ok reject 0", "{fault}", "queue/maildir {maildir}"]


def plugins(fault):
    return [p.replace("{fault}", fault) for p in PLUGINS]


def open_transaction(server, helo):
    c = server.connect()
    c.ehlo(helo)
    c.cmd(f"MAIL FROM:<{SENDER}>", 250)
    return c


def finish_delivery(c, subject):
    msg = make_message(subject, ["delivered while another session suffered"])
    c.cmd(f"RCPT TO:<{RCPT}>", 250)
    c.cmd("DATA", 354)
    c.send(dot_stuff(msg))
    c.expect(250, "2.0.0")
    return msg


def test_plugin_panic_is_isolated(make_server):
    server = make_server(
        plugins=plugins("misbehave panic rcpt"), threads=1, binary=TEST_PLUGINS_BINARY
    )
    healthy = open_transaction(server, "healthy.test")  # started first, held open
    victim = open_transaction(server, "victim.test")
    r = victim.cmd("RCPT TO:<someone@elsewhere.invalid>")
    assert 400 <= r.code < 500 and r.enhanced().startswith("4."), r
    server.wait_log("misbehave")
    # The other session on the same (only) core still delivers.
    msg = finish_delivery(healthy, "after a panic")
    healthy.cmd("QUIT", 221)
    # The panicking session itself is still served (the panic was caught at the plugin).
    victim.cmd("NOOP", 250)
    r = victim.cmd("RCPT TO:<someone@elsewhere.invalid>")
    assert 400 <= r.code < 500, r
    victim.cmd("QUIT", 221)
    # And new sessions are served.
    fresh = open_transaction(server, "fresh.test")
    finish_delivery(fresh, "fresh after a panic")
    fresh.cmd("QUIT", 221)
    files = server.maildir.messages()
    assert len(files) == 2
    [f] = [f for f in files if b"Subject: after a panic\n" in f]
    check_delivered(f, SENDER, [RCPT], msg, helo="healthy.test")
    assert server.proc.poll() is None


def test_plugin_sleep_times_out_and_core_stays_responsive(make_server):
    server = make_server(
        plugins=plugins("misbehave sleep rcpt 30"),
        threads=1,
        settings={"plugin_timeout": 1},
        binary=TEST_PLUGINS_BINARY,
    )
    healthy = open_transaction(server, "healthy.test")
    sleeper = open_transaction(server, "sleeper.test")
    started = time.monotonic()
    sleeper.send("RCPT TO:<someone@elsewhere.invalid>\r\n")  # the plugin now sleeps 30 s
    # Meanwhile, on the same core, the other session completes a delivery.
    msg = finish_delivery(healthy, "while another waits")
    healthy.cmd("QUIT", 221)
    r = sleeper.reply()
    elapsed = time.monotonic() - started
    assert 400 <= r.code < 500 and r.enhanced().startswith("4."), r
    assert elapsed < 25, f"the plugin timeout (1 s) did not fire: reply after {elapsed:.1f}s"
    sleeper.cmd("QUIT", 221)
    check_delivered(server.maildir.only(), SENDER, [RCPT], msg, helo="healthy.test")


def test_sleeping_plugin_does_not_block_the_core(make_server):
    """The same with a long plugin timeout, so the order is certain: the healthy session's
    250 arrives while the sleeping one has had no reply at all."""
    server = make_server(
        plugins=plugins("misbehave sleep rcpt 30"),
        threads=1,
        settings={"plugin_timeout": 12},
        binary=TEST_PLUGINS_BINARY,
    )
    healthy = open_transaction(server, "healthy.test")
    sleeper = open_transaction(server, "sleeper.test")
    sleeper.send("RCPT TO:<someone@elsewhere.invalid>\r\n")
    finish_delivery(healthy, "ordered")
    readable, _, _ = select.select([sleeper.sock], [], [], 0)
    assert not readable, "the sleeping session got an answer before the healthy one finished"
    healthy.cmd("QUIT", 221)
    sleeper.sock.settimeout(IO_TIMEOUT + 12)
    r = sleeper.reply()
    assert 400 <= r.code < 500, r
    sleeper.cmd("QUIT", 221)
    assert len(server.maildir.messages()) == 1


def test_panic_in_queue_hook_gives_4xx_and_delivers_nothing(make_server):
    server = make_server(
        plugins=["rcpt_ok", "misbehave panic queue", "queue/maildir {maildir}"],
        binary=TEST_PLUGINS_BINARY,
    )
    c = open_transaction(server, "queue.test")
    c.cmd(f"RCPT TO:<{RCPT}>", 250)
    c.cmd("DATA", 354)
    c.send(dot_stuff(make_message("panics", ["x"])))
    r = c.reply()
    assert 400 <= r.code < 500 and r.enhanced().startswith("4."), r
    c.cmd("QUIT", 221)
    server.maildir.assert_empty()


def test_production_binary_has_no_fault_injection_plugin(make_server):
    srv = make_server(start=False, plugins=plugins("misbehave panic rcpt"))
    r = srv.check_config(BINARY)  # the production build, whatever srv runs
    assert r.returncode != 0, r.stdout
    assert "misbehave" in r.stderr, r.stderr
