"""kill -9 while clients are pipelining messages: every message that got its 250 is in
Maildir/new, complete, and nothing partial ever shows up in new/ (docs/architecture.md, Durability)."""

from conftest import split_delivered
from kill_load import assert_checksummed, checksummed_message, load_then_kill

RCPT = "rcpt@example.test"
MAX_MESSAGES = 2000  # the clients stop after kill_load.MAX_SECONDS or this many messages in all
KILL_AFTER_ACKED = 1000  # the kill comes after kill_load.KILL_AFTER_SECONDS or this many 250s


def verify_file(data):
    """Returns the test id of a complete delivered file; fails on anything partial."""
    _, rest = split_delivered(data, 1)
    text = rest.decode()
    head, sep, body = text.partition("\n\n")
    assert sep, f"no body: {text[:200]!r}"
    mid = next(l.split(": ", 1)[1] for l in head.split("\n") if l.startswith("X-Test-Id: "))
    assert_checksummed(body, mid)
    return mid


def message(mid):
    """The CRLF message with test id `mid` (kill_load.checksummed_message)."""
    return checksummed_message(mid, [f"Subject: durability {mid}", f"X-Test-Id: {mid}"])


def test_kill9_loses_no_acknowledged_message(make_server):
    server = make_server()
    load = load_then_kill(server, [RCPT], message, MAX_MESSAGES, KILL_AFTER_ACKED, connect_timeout=10)
    errors = load.refused + load.refused_after_kill
    assert not errors, f"a transaction was refused before the kill: {errors[:3]}"
    assert load.killed_at >= 20, f"only {load.killed_at} messages acknowledged before the kill: nothing was tested"
    acked = load.acked

    delivered = {}
    for path in server.maildir.files("new"):
        mid = verify_file(path.read_bytes())
        assert mid not in delivered, f"{mid} delivered twice"
        delivered[mid] = path
    missing = [m for m in acked if m not in delivered]
    assert not missing, f"{len(missing)} acknowledged messages lost, e.g. {missing[:5]}"
    # Files in tmp/ are allowed (a reader never looks there), but none is an acknowledged one.
    print(f"acked {len(acked)}, in new/ {len(delivered)}, in tmp/ {len(server.maildir.files('tmp'))}")
