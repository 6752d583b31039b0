"""The load of the kill -9 tests (test_durability.py, test_crash_queues.py): pipelining clients
send uniquely identified, checksummed messages while the server gets SIGKILL; the test then
checks that every acknowledged message is at the destination, whole.
"""

import hashlib
import random
import threading
import time

from conftest import Closed, dot_stuff

CLIENTS = 4
MAX_SECONDS = 3.0  # each client stops after this long ...
KILL_AFTER_SECONDS = 1.5  # ... and the kill comes while the clients are still sending


def checksummed_message(mid, header_lines):
    """A CRLF message: `header_lines`, a blank line, random lines (seeded by `mid`; some start
    with a dot) and last `Checksum: <sha256 of the lines before>`, so that
    assert_checksummed() tells a whole delivered copy from a truncated one."""
    rnd = random.Random(mid)
    payload = [
        "".join(rnd.choice("abcdefghijklmnopqrstuvwxyz0123456789 .") for _ in range(rnd.randint(0, 200)))
        for _ in range(rnd.randint(1, 60))
    ]
    digest = hashlib.sha256("\n".join(payload).encode()).hexdigest()
    lines = list(header_lines) + [""] + payload + [f"Checksum: {digest}"]
    return "\r\n".join(lines).encode() + b"\r\n"


def assert_checksummed(body, label):
    """Asserts that the delivered `body` (text, LF line ends) of a checksummed_message() is
    whole: it ends in a newline and its last line is the checksum of the lines before.
    `label` starts each failure message."""
    assert body.endswith("\n"), f"{label}: truncated (no final newline)"
    lines = body[:-1].split("\n")
    assert lines[-1].startswith("Checksum: "), f"{label}: truncated (no checksum line)"
    digest = hashlib.sha256("\n".join(lines[:-1]).encode()).hexdigest()
    assert lines[-1] == f"Checksum: {digest}", f"{label}: body does not match its checksum"


class Load:
    """What happened during load_then_kill()."""

    def __init__(self):
        self.acked = []  # test ids that got 250 to the final dot
        self.written = []  # test ids whose transaction was written to the socket
        self.refused = []  # (id, codes) refused before the kill
        self.refused_after_kill = []  # (id, codes) of refusals read after it
        self.killed_at = None  # len(acked) right after the kill


def load_then_kill(server, rcpts, message, max_messages, kill_after_acked, connect_timeout=30, mid_suffix=""):
    """CLIENTS threads, one connection each (EHLO client<n>.test), send message(mid) (mid is
    "c<n>-<seq><mid_suffix>") from c<n>@client.test to `rcpts`, a whole transaction in one write, for
    MAX_SECONDS or until `max_messages` were written in all; a client stops at its first
    refusal. The server gets SIGKILL after KILL_AFTER_SECONDS or `kill_after_acked`
    acknowledged messages. Asserts that no client hangs after the kill; returns a Load."""
    lock = threading.Lock()
    load = Load()
    start = time.monotonic()
    killed = threading.Event()
    rcpt_lines = "".join(f"RCPT TO:<{r}>\r\n" for r in rcpts)

    def client(n):
        try:
            c = server.connect(timeout=connect_timeout)
            c.ehlo(f"client{n}.test")
            seq = 0
            while time.monotonic() - start < MAX_SECONDS:
                with lock:
                    if len(load.written) >= max_messages:
                        return
                    seq += 1
                    mid = f"c{n}-{seq}{mid_suffix}"
                    load.written.append(mid)
                c.send(f"MAIL FROM:<c{n}@client.test>\r\n{rcpt_lines}DATA\r\n".encode() + dot_stuff(message(mid)))
                codes = [c.reply().code for _ in range(len(rcpts) + 3)]
                if codes != [250] * (len(rcpts) + 1) + [354, 250]:
                    (load.refused_after_kill if killed.is_set() else load.refused).append((mid, codes))
                    return
                with lock:
                    load.acked.append(mid)
        except (OSError, Closed):
            return  # the server was killed under us: expected

    threads = [threading.Thread(target=client, args=(n,), daemon=True) for n in range(CLIENTS)]
    for t in threads:
        t.start()
    while time.monotonic() - start < KILL_AFTER_SECONDS and len(load.acked) < kill_after_acked:
        time.sleep(0.01)
    killed.set()
    server.kill9()
    load.killed_at = len(load.acked)
    for t in threads:
        t.join(timeout=30)
        assert not t.is_alive(), "a client hung after the kill"
    return load
