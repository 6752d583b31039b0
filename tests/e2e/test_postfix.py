"""Postfix as a real relaying client: a private Postfix instance (own config and queue
directories under a temp dir, no listener, `relayhost = [127.0.0.1]:PORT`) takes mail from its
`sendmail` and relays it to ringsmtpd, whose Maildir must then hold it.

Postfix's master runs as root and its daemons as the `postfix` user (Debian package
`postfix`, installed with "No configuration" so no system instance runs); tests/run installs
it. The instance lives under /tmp/ringsmtpd-postfix.* (mode 0755, so the `postfix` user can
reach it: pytest's own tmp dirs are root-only).
"""

import os
import pathlib
import shutil
import subprocess
import tempfile
import time

import pytest

from conftest import ME, split_delivered, wait_for

SENDER = "sender@postfix.test"

MAIN_CF = """\
compatibility_level = 3.6
config_directory = {base}/etc
queue_directory = {base}/queue
data_directory = {base}/data
meta_directory = /etc/postfix
shlib_directory = /usr/lib/postfix
daemon_directory = /usr/lib/postfix/sbin
command_directory = /usr/sbin
mail_owner = postfix
setgid_group = postdrop
myhostname = postfix.test
mydomain = postfix.test
myorigin = postfix.test
mydestination =
local_recipient_maps =
alias_maps =
alias_database =
inet_interfaces = loopback-only
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
relayhost = [127.0.0.1]:{port}
smtp_tls_security_level = none
smtp_dns_support_level = disabled
smtp_connection_cache_on_demand = no
maillog_file = {base}/maillog
maillog_file_prefixes = {base}
queue_run_delay = 1s
minimal_backoff_time = 1s
maximal_backoff_time = 2s
biff = no
"""

# Only the services a relaying null client needs; no smtpd: nothing listens.
MASTER_CF = """\
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""


class Postfix:
    def __init__(self, base, port):
        self.base = pathlib.Path(base)
        self.etc = self.base / "etc"
        self.maillog = self.base / "maillog"
        for d in ("etc", "queue", "data"):
            (self.base / d).mkdir()
        shutil.chown(self.base / "data", user="postfix")
        (self.etc / "main.cf").write_text(MAIN_CF.format(base=self.base, port=port))
        (self.etc / "master.cf").write_text(MASTER_CF)

    def run(self, args, input=None, check=True, timeout=60):
        r = subprocess.run(
            args, input=input, capture_output=True, timeout=timeout,
            stdin=None if input is not None else subprocess.DEVNULL,
        )
        if check and r.returncode != 0:
            pytest.fail(f"{' '.join(args)} exited {r.returncode}: {r.stdout!r} {r.stderr!r}\n{self.log()}")
        return r

    def log(self):
        return self.maillog.read_text(errors="replace") if self.maillog.exists() else "(no maillog)"

    def start(self):
        self.run(["postfix", "-c", str(self.etc), "start"])
        status = self.run(["postfix", "-c", str(self.etc), "status"], check=False)
        if status.returncode != 0:
            pytest.fail(f"the private Postfix did not start:\n{self.log()}")

    def stop(self):
        r = self.run(["postfix", "-c", str(self.etc), "stop"], check=False)
        if r.returncode != 0:
            self.run(["postfix", "-c", str(self.etc), "abort"], check=False)

    def sendmail(self, sender, rcpts, message):
        self.run(["sendmail", "-C", str(self.etc), "-f", sender, "-i", "--"] + rcpts, input=message)

    def flush(self):
        self.run(["postqueue", "-c", str(self.etc), "-f"], check=False)

    def queue_listing(self):
        return self.run(["postqueue", "-c", str(self.etc), "-p"], check=False).stdout.decode(errors="replace")


@pytest.fixture
def postfix(make_server):
    missing = [p for p in ("postfix", "sendmail", "postqueue") if not shutil.which(p, path="/usr/sbin:/usr/bin")]
    if missing:
        pytest.fail(
            f"Postfix is not installed ({', '.join(missing)} missing): "
            "`apt-get install postfix` with debconf postfix/main_mailer_type='No configuration' "
            "(tests/run does it)"
        )
    if os.geteuid() != 0:
        pytest.fail("the private Postfix instance needs root: its master process starts as root")
    server = make_server(settings={"size_threshold": 65536})
    base = tempfile.mkdtemp(prefix="ringsmtpd-postfix.", dir="/tmp")
    os.chmod(base, 0o755)
    pf = Postfix(base, server.port)
    pf.start()
    pf.server = server
    yield pf
    pf.stop()
    shutil.rmtree(base, ignore_errors=True)


def wait_delivered(pf, n, deadline=90):
    """Polls the Maildir, flushing Postfix's queue now and then; fails with both logs."""
    end = time.monotonic() + deadline
    last_flush = 0.0
    while True:
        files = pf.server.maildir.messages()
        if len(files) >= n:
            return files
        now = time.monotonic()
        if now > end:
            pytest.fail(
                f"{len(files)} of {n} messages arrived within {deadline}s\n"
                f"postfix queue:\n{pf.queue_listing()}\npostfix log:\n{pf.log()[-4000:]}\n"
                f"ringsmtpd log:\n{pf.server.log()[-4000:]}"
            )
        if now - last_flush > 3:
            pf.flush()
            last_flush = now
        time.sleep(0.1)


def body_after_postfix_headers(rest):
    """The part after the header section Postfix wrote (it adds Received, Message-Id, ...)."""
    head, sep, body = rest.partition(b"\n\n")
    assert sep, "no header/body separator"
    return head, body


def test_postfix_relays_to_ringsmtpd(postfix):
    rcpts = ["one@example.test", "two@example.test"]
    body_lines = [
        "Relayed by a real Postfix.",
        ".a line starting with a dot",
        ".",
        "..",
        "Grüße, 8-bit text",
        "x" * 990,
    ]
    message = (
        "From: Sender <sender@postfix.test>\n"
        "To: one@example.test, two@example.test\n"
        "Subject: through postfix\n"
        "MIME-Version: 1.0\n"
        "Content-Type: text/plain; charset=utf-8\n"
        "Content-Transfer-Encoding: 8bit\n"
        "\n" + "\n".join(body_lines) + "\n"
    ).encode()
    postfix.sendmail(SENDER, rcpts, message)
    postfix.flush()
    [f] = wait_delivered(postfix, 1)
    fields, rest = split_delivered(f, len(rcpts))
    assert fields[0] == ("Return-Path", f"<{SENDER}>")
    assert [v for _, v in fields[1:3]] == rcpts
    assert fields[3] == ("Authentication-Results", f"{ME}; auth=none")
    received = fields[4][1]
    assert received.startswith("from unknown (HELO postfix.test) (127.0.0.1)\n\tby mx.test (ringsmtpd/")
    assert " with ESMTP; " in received
    head, body = body_after_postfix_headers(rest)
    assert b"Received: by postfix.test (Postfix" in head
    assert b"Subject: through postfix" in head
    assert body == ("\n".join(body_lines) + "\n").encode()
    # Postfix logs the delivery after it got our 250, so the line may trail the Maildir file.
    wait_for(lambda: "status=sent (250 2.0.0 Queued!" in postfix.log(), 30, "Postfix's status=sent log line")


def test_postfix_relays_a_large_message_and_several_messages(postfix):
    big_lines = [f"{i:07d} " + "abcdefghij" * 9 for i in range(30000)]  # ~3 MB: spooled
    messages = {
        "big": "Subject: big\n\n" + "\n".join(big_lines) + "\n",
        "small1": "Subject: small1\n\nfirst small\n",
        "small2": "Subject: small2\n\nsecond small\n",
    }
    for name, text in messages.items():
        postfix.sendmail(SENDER, [f"{name}@example.test"], text.encode())
    postfix.flush()
    files = wait_delivered(postfix, 3)
    for name, text in messages.items():
        [f] = [f for f in files if f"Delivered-To: {name}@example.test\n".encode() in f]
        _, rest = split_delivered(f, 1)
        _, body = body_after_postfix_headers(rest)
        assert body == text.split("\n\n", 1)[1].encode(), name
    assert list(postfix.server.spool.iterdir()) == []


def test_postfix_sees_the_refusal_of_a_foreign_recipient(postfix):
    postfix.sendmail(SENDER, ["ok@example.test", "nobody@elsewhere.invalid"], b"Subject: mixed\n\nmixed\n")
    postfix.flush()
    [f] = wait_delivered(postfix, 1)
    fields, _ = split_delivered(f, 1)
    assert fields[1] == ("Delivered-To", "ok@example.test")
    deadline = time.monotonic() + 30
    while "nobody@elsewhere.invalid" not in postfix.log() or "550 5.7.1" not in postfix.log():
        if time.monotonic() > deadline:
            pytest.fail(f"Postfix never logged the 550 for the foreign recipient:\n{postfix.log()}")
        time.sleep(0.1)
