"""kill -9 while clients are pipelining messages: every message that got its 250 is in
Maildir/new, complete, and nothing partial ever shows up in new/ (docs/architecture.md, Durability)."""

import threading
import time

from conftest import Closed, assert_checksummed, checksummed_message, dot_stuff, split_delivered

RCPT = "rcpt@example.test"
CLIENTS = 4
MAX_SECONDS = 3.0  # each client stops after this long ...
MAX_MESSAGES = 2000  # ... or when this many messages were sent in all
KILL_AFTER_SECONDS = 1.5  # the kill comes while the clients are still sending
KILL_AFTER_ACKED = 1000


def verify_file(data):
    """Returns the test id of a complete delivered file; fails on anything partial."""
    _, rest = split_delivered(data, 1)
    text = rest.decode()
    head, sep, body = text.partition("\n\n")
    assert sep, f"no body: {text[:200]!r}"
    mid = next(l.split(": ", 1)[1] for l in head.split("\n") if l.startswith("X-Test-Id: "))
    assert_checksummed(body, mid)
    return mid


def test_kill9_loses_no_acknowledged_message(make_server):
    server = make_server()
    lock = threading.Lock()
    acked = []
    sent = [0]
    errors = []
    start = time.monotonic()

    def client(n):
        try:
            c = server.connect(timeout=10)
            c.ehlo(f"client{n}.test")
            seq = 0
            while time.monotonic() - start < MAX_SECONDS:
                with lock:
                    if sent[0] >= MAX_MESSAGES:
                        return
                    sent[0] += 1
                seq += 1
                mid = f"c{n}-{seq}"
                msg = checksummed_message(mid, [f"Subject: durability {mid}", f"X-Test-Id: {mid}"])
                # The whole transaction in one write.
                c.send(
                    f"MAIL FROM:<c{n}@client.test>\r\nRCPT TO:<{RCPT}>\r\nDATA\r\n".encode() + dot_stuff(msg)
                )
                codes = [c.reply().code for _ in range(4)]
                if codes != [250, 250, 354, 250]:
                    errors.append((mid, codes))
                    return
                with lock:
                    acked.append(mid)
        except (OSError, Closed):
            return  # the server was killed under us: expected

    threads = [threading.Thread(target=client, args=(n,), daemon=True) for n in range(CLIENTS)]
    for t in threads:
        t.start()
    while time.monotonic() - start < KILL_AFTER_SECONDS and len(acked) < KILL_AFTER_ACKED:
        time.sleep(0.01)
    server.kill9()
    killed_at = len(acked)
    for t in threads:
        t.join(timeout=30)
        assert not t.is_alive(), "a client hung after the kill"
    assert not errors, f"a transaction was refused before the kill: {errors[:3]}"
    assert killed_at >= 20, f"only {killed_at} messages acknowledged before the kill: nothing was tested"

    delivered = {}
    for path in server.maildir.files("new"):
        mid = verify_file(path.read_bytes())
        assert mid not in delivered, f"{mid} delivered twice"
        delivered[mid] = path
    missing = [m for m in acked if m not in delivered]
    assert not missing, f"{len(missing)} acknowledged messages lost, e.g. {missing[:5]}"
    # Files in tmp/ are allowed (a reader never looks there), but none is an acknowledged one.
    print(f"acked {len(acked)}, in new/ {len(delivered)}, in tmp/ {len(server.maildir.files('tmp'))}")
