"""Postfix's smtp-source as a load generator, shared by bench/compare and bench/cpu-per-message.

smtp-source sends one command per round trip (no pipelining), `-s` sessions in parallel, each
message `-l` bytes of payload after its headers. The two modes: `-d` keeps a session open for
the next message (connection reuse); without it every message has a connection of its own.
CONFIGS are the ringsmtpd configurations of issue 16's table (None: Postfix's smtp-sink).
"""

import os
import subprocess
import sys
import time

SMTP_SOURCE = "/usr/sbin/smtp-source"

# name -> ringsmtpd arguments (None: smtp-sink); "default" is what a bare start picks: io_uring
# when the kernel allows it, one worker per core.
CONFIGS = {
    "default": [],
    "uring-1": ["--driver", "uring", "--threads", "1"],
    "epoll-2": ["--driver", "epoll", "--threads", "2"],
    "epoll-1": ["--driver", "epoll", "--threads", "1"],
    "sink": None,
}
LABELS = {
    "default": "default (io_uring, 2 workers)",
    "uring-1": "io_uring, 1 worker",
    "epoll-2": "epoll, 2 workers",
    "epoll-1": "epoll, 1 worker",
    "sink": "smtp-sink",
}
MODES = {
    "reuse": ["-d"],   # connection reuse: many messages per session
    "single": [],      # one message per connection
}
MODE_LABELS = {"reuse": "`-d` (connection reuse)", "single": "one message per connection"}
SENDER, RECIPIENT = "bench@example.org", "user@example.com"


def argv(port, mode, messages, sessions, size=1024):
    """The command line: `smtp-source -c [-d] -s SESSIONS -l SIZE -m MESSAGES`."""
    return [SMTP_SOURCE, "-c", *MODES[mode], "-s", str(sessions), "-l", str(size),
            "-m", str(messages), "-f", SENDER, "-t", RECIPIENT, "-M", "client.test",
            f"127.0.0.1:{port}"]


def run(port, mode, messages, sessions, timeout, what="smtp-source"):
    """Sends `messages` messages to 127.0.0.1:port; returns the wall seconds it took. A
    warning (a reply it did not expect, a connection lost) or a failure ends the bench: every
    message counted must have had its 250."""
    if not os.access(SMTP_SOURCE, os.X_OK):
        sys.exit(f"{what}: {SMTP_SOURCE} is missing: apt-get install postfix")
    started = time.monotonic()
    r = subprocess.run(argv(port, mode, messages, sessions), stdin=subprocess.DEVNULL,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=timeout,
                       text=True)
    took = time.monotonic() - started
    if r.returncode != 0 or r.stderr.strip():
        sys.exit(f"{what}: smtp-source against 127.0.0.1:{port} exited {r.returncode}: "
                 f"{r.stderr.strip()[:2000]}")
    return took
