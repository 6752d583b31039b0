"""kill -9 of ringsmtpd under load, with each queue plugin that hands the message to another
program: every message our client got a 250 for must be at the destination, complete, once
the destination has finished its own delivery (docs/architecture.md, Durability: 250 only when the message is
durable downstream).

Destinations (the same private instances as the other end-to-end tests):

- queue/smtp-forward -> the private Postfix (private_postfix.py) of test_forward.py (smtpd on a loopback port,
  `virtual` delivery into a Maildir);
- queue/postfix-queue -> the private Postfix of test_queues.py (its public/cleanup socket);
- queue/qmail-queue -> a TEST PROGRAM speaking qmail-queue's fd protocol (not qmail: there is
  no qmail package). Unlike test_queues.py's, it stores each message under a unique name with
  write + fsync + rename, as a queue must when several run at once;
- queue/exim-bsmtp -> the private Exim of test_queues.py (`exim -C ... -bS`);
- queue/lmtp -> the private Dovecot LMTP of test_lmtp_dovecot.py (each message to two users).

queue/maildir is not here: test_durability.py is the same test for it.

Each test (the load of kill_load.py): 4 clients, each with one connection, send uniquely
identified messages (Message-ID and X-Test-Id, a Checksum line over the body) in a loop, a whole
transaction in one write (pipelining), for at most MAX_SECONDS or MAX_MESSAGES; the server gets
SIGKILL after KILL_AFTER_SECONDS or KILL_AFTER_ACKED acknowledged messages. Then the destination is
polled (with a deadline; Postfix's queue flushed, Exim's queue run) until it holds every
acknowledged message and has nothing left in flight. Checked: every acknowledged message
delivered (to each recipient), every delivered file complete (checksum), none delivered twice
(nobody retried). Messages sent without a 250 may or may not be there (SMTP's at-least-once):
they are counted and printed (run with -s to see the counts).
"""

import os
import pathlib
import signal
import subprocess
import time

import pytest

from kill_load import assert_checksummed, checksummed_message, load_then_kill
from test_forward import downstream  # noqa: F401 - the fixture: the private Postfix (smtpd)
from test_lmtp_dovecot import DOMAIN as DOVECOT_DOMAIN
from test_lmtp_dovecot import dovecot  # noqa: F401 - the fixture: the private Dovecot
from test_queues import exim, postfix  # noqa: F401 - the fixtures: Postfix (cleanup), Exim

MAX_MESSAGES = 800  # the clients stop after kill_load.MAX_SECONDS or this many messages in all
KILL_AFTER_ACKED = 400  # the kill comes after kill_load.KILL_AFTER_SECONDS or this many 250s
DELIVERY_DEADLINE = 40.0  # for the destination to deliver what it accepted

# ---------------------------------------------------------------------------------------------
# Messages


def message(mid):
    """The CRLF message with test id `mid` (conftest.checksummed_message)."""
    return checksummed_message(mid, [
        "From: load@client.test",
        f"Subject: crash {mid}",
        f"Message-ID: <{mid}@crash.test>",
        f"X-Test-Id: {mid}",
    ])


def verify(data, where):
    """The test id of a delivered file; fails if it is not complete and intact."""
    text = data.replace(b"\r\n", b"\n").decode("utf-8", "replace")
    head, sep, body = text.partition("\n\n")
    assert sep, f"{where}: no header/body separator: {text[:300]!r}"
    ids = [l.split(": ", 1)[1] for l in head.split("\n") if l.startswith("X-Test-Id: ")]
    assert len(ids) == 1, f"{where}: {len(ids)} X-Test-Id fields in {head!r}"
    mid = ids[0]
    assert f"\nMessage-ID: <{mid}@crash.test>" in "\n" + head, f"{where}: {mid}: Message-ID missing"
    assert_checksummed(body, f"{where}: {mid}")
    return mid


# ---------------------------------------------------------------------------------------------
# The load and the kill


def load_and_kill(server, rcpts):
    """kill_load.load_then_kill with this file's messages; asserts that nothing was refused
    before the kill and that the kill came in the middle of the load. Returns a Load."""
    load = load_then_kill(server, rcpts, message, MAX_MESSAGES, KILL_AFTER_ACKED, mid_suffix=f"-{os.getpid()}")
    assert not load.refused, f"transactions refused before the kill: {load.refused[:3]}\n{server.log()[-3000:]}"
    assert load.killed_at >= 20, (
        f"only {load.killed_at} messages acknowledged before the kill: nothing was tested\n{server.log()[-3000:]}")
    assert len(load.written) > len(load.acked), "the kill came after the load: nothing was in flight"
    return load


def check(load, delivered, name):
    """delivered: {recipient: [file bytes]}. Asserts and prints the counts."""
    lost, extra = [], 0
    for rcpt, files in delivered.items():
        seen = {}
        for i, data in enumerate(files):
            mid = verify(data, f"{name} {rcpt} file {i}")
            assert mid not in seen, f"{name}: {mid} delivered twice to {rcpt}"
            seen[mid] = True
        unknown = [m for m in seen if m not in set(load.written)]
        assert not unknown, f"{name}: delivered messages nobody sent: {unknown[:3]}"
        lost += [(rcpt, m) for m in load.acked if m not in seen]
        extra = max(extra, sum(1 for m in seen if m not in set(load.acked)))
    assert not lost, f"{name}: {len(lost)} acknowledged message(s) lost, e.g. {lost[:5]}"
    print(f"\n{name}: written {len(load.written)}, acked {len(load.acked)} "
          f"(at the kill {load.killed_at}), not acked {len(load.written) - len(load.acked)}, "
          f"of which delivered anyway {extra}")


def poll(done, deadline, what, every=None, action=None):
    """Waits for done() with a deadline; runs action() every `every` seconds meanwhile."""
    end = time.monotonic() + deadline
    last = time.monotonic()
    while not done():
        if time.monotonic() > end:
            pytest.fail(f"timed out after {deadline}s waiting for {what}")
        if action and time.monotonic() - last >= every:
            action()
            last = time.monotonic()
        time.sleep(0.1)


def quiet(count, period=1.0, deadline=DELIVERY_DEADLINE, what="the destination to settle"):
    """Waits until count() has not changed for `period` seconds."""
    end = time.monotonic() + deadline
    value, since = count(), time.monotonic()
    while time.monotonic() - since < period:
        if time.monotonic() > end:
            pytest.fail(f"timed out after {deadline}s waiting for {what}")
        time.sleep(0.1)
        v = count()
        if v != value:
            value, since = v, time.monotonic()


def maildir_new(path):
    new = pathlib.Path(path) / "new"
    return sorted(p for p in new.iterdir() if not p.name.startswith(".")) if new.is_dir() else []


def pids_with(needle):
    """Processes whose command line contains `needle` (a unique temp path of this test)."""
    out = []
    for p in pathlib.Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            if needle.encode() in (p / "cmdline").read_bytes():
                out.append(int(p.name))
        except OSError:
            pass
    return out


def all_acked_in(load, dirs):
    def done():
        for d in dirs:
            names = {verify_name(f) for f in maildir_new(d)}
            if not set(load.acked) <= names:
                return False
        return True

    return done


def verify_name(path):
    """The X-Test-Id of a file without full verification (for polling)."""
    try:
        head = path.read_bytes().split(b"\n\n", 1)[0]
    except OSError:
        return None
    for line in head.split(b"\n"):
        if line.startswith(b"X-Test-Id: "):
            return line[11:].decode().strip()
    return None


# ---------------------------------------------------------------------------------------------
# Postfix (both roles: smtpd and cleanup)


def postfix_settles(pf, load):
    """Waits (flushing Postfix's queue every 3 s) until every acknowledged message is in the
    private Postfix's Maildir and its queue is empty."""
    pf.flush()
    poll(all_acked_in(load, [pf.mailbox]), DELIVERY_DEADLINE, "every acknowledged message in Postfix's Maildir",
         every=3, action=pf.flush)
    poll(lambda: "Mail queue is empty" in pf.queue_listing(), DELIVERY_DEADLINE, "Postfix's queue to empty",
         every=3, action=pf.flush)


# ---------------------------------------------------------------------------------------------
# queue/smtp-forward -> Postfix (smtpd)


def test_kill9_smtp_forward_into_postfix(make_server, downstream):  # noqa: F811
    pf = downstream()
    server = make_server(plugins=["rcpt_ok", f"queue/smtp-forward 127.0.0.1 {pf.port}"])
    load = load_and_kill(server, ["crash@example.test"])
    postfix_settles(pf, load)
    check(load, {"crash@example.test": [p.read_bytes() for p in maildir_new(pf.mailbox)]}, "smtp-forward")


# ---------------------------------------------------------------------------------------------
# queue/postfix-queue -> Postfix (cleanup)


def test_kill9_postfix_queue(make_server, postfix):  # noqa: F811
    server = make_server(plugins=["rcpt_ok", f"queue/postfix-queue {postfix.socket} FLAG_MASK_EXTERNAL"],
                         settings={"rcpthosts": "pfdest.test"})
    load = load_and_kill(server, ["crash@pfdest.test"])
    postfix_settles(postfix, load)
    # cleanup files a message only when the client's end-of-data record came: nothing partial
    # may have been queued from a connection cut by the kill (verify() checks every file).
    check(load, {"crash@pfdest.test": [p.read_bytes() for p in maildir_new(postfix.mailbox)]}, "postfix-queue")


# ---------------------------------------------------------------------------------------------
# queue/qmail-queue -> a test program

# A TEST PROGRAM, not qmail: qmail-queue's documented protocol (qmail-queue(8)): the message on
# fd 0 until EOF, then the envelope on fd 1; a malformed or missing envelope (the server died
# before writing it) exits 91 and queues nothing; else the message is written to tmp/, fsynced
# and renamed into new/ (durable, as qmail-queue is before it exits 0), and it exits 0.
CRASH_QMAIL_QUEUE = """\
#!/usr/bin/python3 -S
import os, re, sys
d = os.path.dirname(os.path.abspath(__file__))
msg = os.fdopen(0, "rb").read()
env = os.fdopen(1, "rb").read()
if not re.fullmatch(rb"F[^\\0]*\\0(T[^\\0]+\\0)+\\0", env, re.S):
    sys.exit(91)
name = "%d.%d" % (os.getpid(), int.from_bytes(os.urandom(6), "big"))
tmp = os.path.join(d, "tmp", name)
with open(tmp, "wb") as f:
    f.write(b"X-Envelope: " + env.replace(b"\\0", b" ") + b"\\n" + msg)
    f.flush()
    os.fsync(f.fileno())
os.rename(tmp, os.path.join(d, "new", name))
sys.exit(0)
"""


def test_kill9_qmail_queue(make_server, tmp_path):
    qq = tmp_path / "qq"
    for d in ("tmp", "new"):
        (qq / d).mkdir(parents=True)
    prog = qq / "qmail-queue"
    prog.write_text(CRASH_QMAIL_QUEUE)
    prog.chmod(0o755)
    server = make_server(plugins=["rcpt_ok", f"queue/qmail-queue {prog}"])
    load = load_and_kill(server, ["crash@example.test"])
    try:
        # The children the dead server left finish (or give up) on their own: the pipes
        # from a dead parent end in EOF.
        poll(lambda: not pids_with(str(prog)), 30, "the orphaned qmail-queue test programs to exit")
    finally:
        for pid in pids_with(str(prog)):  # only ours: the path is this test's temp dir
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    files = []
    for p in maildir_new(qq):
        data = p.read_bytes()
        env, _, msg = data.partition(b"\n")
        sender = verify_name(p).split("-")[0] + "@client.test"
        assert env == f"X-Envelope: F{sender} Tcrash@example.test  ".encode(), (p, env)
        files.append(msg)
    check(load, {"crash@example.test": files}, "qmail-queue")


# ---------------------------------------------------------------------------------------------
# queue/exim-bsmtp -> Exim


def test_kill9_exim_bsmtp(make_server, exim):  # noqa: F811
    server = make_server(plugins=["rcpt_ok", f"queue/exim-bsmtp exim_path {exim.wrapper}"],
                         settings={"rcpthosts": "eximdest.test"})
    load = load_and_kill(server, ["crash@eximdest.test"])
    spool = exim.base / "spool" / "input"

    def queue_run():
        subprocess.run([str(exim.wrapper), "-qff"], capture_output=True, timeout=30, stdin=subprocess.DEVNULL)

    def spool_empty():
        return not any(spool.rglob("*-H")) if spool.exists() else True

    def settled():
        return spool_empty() and not pids_with(str(exim.conf))

    poll(all_acked_in(load, [exim.maildir]), DELIVERY_DEADLINE, "every acknowledged message in Exim's Maildir",
         every=3, action=queue_run)
    poll(settled, DELIVERY_DEADLINE, "Exim's spool to empty and its processes to exit", every=3, action=queue_run)
    check(load, {"crash@eximdest.test": [p.read_bytes() for p in maildir_new(exim.maildir)]}, "exim-bsmtp")
    print(exim.log().count(" <= "), "messages received by Exim;",
          exim.log().count("Completed"), "completed")


# ---------------------------------------------------------------------------------------------
# queue/lmtp -> Dovecot


def test_kill9_lmtp_into_dovecot(make_server, dovecot):  # noqa: F811
    dc = dovecot()
    rcpts = {u: f"{u}@{DOVECOT_DOMAIN}" for u in ("alice", "bob")}
    server = make_server(plugins=["rcpt_ok", f"queue/lmtp 127.0.0.1:{dc.port}"],
                         settings={"rcpthosts": DOVECOT_DOMAIN})
    load = load_and_kill(server, list(rcpts.values()))
    dirs = [dc.maildir(u) for u in rcpts]
    poll(all_acked_in(load, dirs), DELIVERY_DEADLINE, "every acknowledged message in both Maildirs")
    # Dovecot saves before it answers; what it was saving at the kill lands now or never.
    quiet(lambda: sum(len(maildir_new(d)) for d in dirs))
    check(load, {r: [p.read_bytes() for p in maildir_new(dc.maildir(u))] for u, r in rcpts.items()}, "lmtp")
