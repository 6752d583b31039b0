"""queue/lmtp into a real message store: a private Dovecot LMTP server.

The test starts its own Dovecot (`dovecot -F -c <temp dir>/dovecot.conf`, as root: Dovecot's
master must be root to switch to the mail user) with a minimal config written here:
`protocols = lmtp`, an LMTP listener on a free loopback port and its Unix socket in the temp
`base_dir`, no IMAP/POP3 listeners, a passwd-file userdb with static test users, Maildirs under
the temp dir (owned by `nobody`), the log in the temp dir. Dovecot's internal and login users
are the `dovecot` and `dovenull` accounts the Debian package creates.

Users: alice and bob (ordinary), full (a 1-byte quota: Dovecot answers `552 5.2.2` for her
after the final dot) and tfull (the same with `quota_full_tempfail`: `452 4.2.2`), which
exercise the per-recipient replies of RFC 2033 §4.2 that queue/lmtp maps to one reply
(see the table in plugins/src/queue/lmtp.rs).

Needs the Debian packages `dovecot-core` and `dovecot-lmtpd` (tests/run installs them; the
packages enable a system dovecot.service, which tests/run stops and disables) and root.
"""

import os
import pwd
import grp
import signal
import subprocess
import time

import pytest

from conftest import ME, Client, free_port, make_message, private_dir, send_message, wait_for

DOVECOT = "/usr/sbin/dovecot"
LMTP_BIN = "/usr/lib/dovecot/lmtp"
INSTALL_HELP = (
    "Dovecot is missing: `DEBIAN_FRONTEND=noninteractive apt-get install -y dovecot-core "
    "dovecot-lmtpd`, then `systemctl disable --now dovecot.service dovecot.socket` (or "
    "`service dovecot stop`) so no system instance keeps running (tests/run does this)"
)
DOMAIN = "dest.test"
SENDER = "sender@client.test"

DOVECOT_CONF = """\
# A private Dovecot for ringsmtpd's end-to-end tests: LMTP only, everything in {base}.
base_dir = {base}/run
state_dir = {base}/state
log_path = {base}/dovecot.log
instance_name = ringsmtpd-test-{port}
hostname = lmtp.test
protocols = lmtp
listen = 127.0.0.1
ssl = no
default_internal_user = dovecot
default_internal_group = dovecot
default_login_user = dovenull
first_valid_uid = {uid}
last_valid_uid = {uid}
mail_location = maildir:{base}/mail/%u
mail_plugins = quota
plugin {{
  quota = maildir:User quota
}}
passdb {{
  driver = passwd-file
  args = {base}/users
}}
userdb {{
  driver = passwd-file
  args = {base}/users
}}
service lmtp {{
  inet_listener lmtp {{
    address = 127.0.0.1
    port = {port}
  }}
  unix_listener lmtp {{
    mode = 0666
  }}
}}
"""

# passwd-file: user:password:uid:gid:gecos:home:shell:extra fields (userdb_* override settings).
USERS = {
    "alice": "",
    "bob": "",
    "full": "userdb_quota_rule=*:storage=1B",
    "tfull": "userdb_quota_rule=*:storage=1B userdb_quota_full_tempfail=yes",
}


class Dovecot:
    """A private Dovecot LMTP server on 127.0.0.1:port and <base>/run/lmtp."""

    def __init__(self):
        self.base = private_dir("ringsmtpd-dovecot.")
        self.port = free_port()
        self.socket = self.base / "run" / "lmtp"
        self.conf = self.base / "dovecot.conf"
        self.logfile = self.base / "dovecot.log"
        self.proc = None
        self._out = None
        uid = pwd.getpwnam("nobody").pw_uid
        gid = grp.getgrnam("nogroup").gr_gid
        for d in ("run", "state", "mail"):
            (self.base / d).mkdir()
        os.chown(self.base / "mail", uid, gid)
        (self.base / "users").write_text("".join(
            f"{u}@{DOMAIN}::{uid}:{gid}::{self.base}/mail/{u}@{DOMAIN}::{extra}\n"
            for u, extra in USERS.items()
        ))
        self.conf.write_text(DOVECOT_CONF.format(base=self.base, port=self.port, uid=uid))

    def log(self):
        text = self.logfile.read_text(errors="replace") if self.logfile.exists() else "(no dovecot.log)"
        out = self.base / "stdout.log"
        if out.exists():
            text += "\n[stdout/stderr] " + out.read_text(errors="replace")
        return text

    def _listening(self):
        try:
            c = Client(self.port, timeout=2)
        except OSError:
            return False
        try:
            return c.reply().code == 220
        except Exception:  # noqa: BLE001 - not up yet
            return False
        finally:
            c.close()

    def start(self):
        self._out = open(self.base / "stdout.log", "ab")
        self.proc = subprocess.Popen([DOVECOT, "-F", "-c", str(self.conf)], stdin=subprocess.DEVNULL,
                                     stdout=self._out, stderr=self._out, start_new_session=True)

        def up():
            if self.proc.poll() is not None:
                pytest.fail(f"dovecot exited with {self.proc.returncode} at start:\n{self.log()}")
            return self._listening() and self.socket.exists()

        wait_for(up, 30, "the private Dovecot to answer LMTP", interval=0.05)
        return self

    def stop(self):
        """Stops the master, which ends its children (lmtp, auth, log) with it."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        # The children go with the master; wait until nothing answers any more.
        wait_for(lambda: not self._listening(), 15, "the private Dovecot to stop listening")
        self._out.close()

    # -- the message store ----------------------------------------------------------------
    def maildir(self, user):
        return self.base / "mail" / f"{user}@{DOMAIN}"

    def files(self, user):
        new = self.maildir(user) / "new"
        return sorted(p for p in new.iterdir() if not p.name.startswith(".")) if new.is_dir() else []

    def wait_files(self, user, n, deadline=30):
        wait_for(lambda: len(self.files(user)) >= n, deadline, f"{n} message(s) for {user}")
        time.sleep(0.3)  # a duplicate would arrive now
        return [p.read_bytes() for p in self.files(user)]


def require_dovecot():
    for prog in (DOVECOT, LMTP_BIN):
        if not os.access(prog, os.X_OK):
            pytest.fail(f"{prog} not found. " + INSTALL_HELP)
    for user in ("dovecot", "dovenull"):
        try:
            pwd.getpwnam(user)
        except KeyError:
            pytest.fail(f"the {user} user is missing (the dovecot-core package creates it). " + INSTALL_HELP)
    if os.geteuid() != 0:
        pytest.fail("the private Dovecot needs root: its master switches to the mail user")


@pytest.fixture
def dovecot(peers):
    """dovecot(start=True) -> Dovecot; every instance is stopped and removed at the end."""
    require_dovecot()

    def make(start=True):
        d = Dovecot()
        peers.append(d)
        return d.start() if start else d

    return make


def lmtp_server(make_server, dest, extra="", threads=None):
    return make_server(plugins=["rcpt_ok", f"queue/lmtp {dest} {extra}".strip()],
                       settings={"rcpthosts": DOMAIN}, threads=threads)


def head_body(data):
    head, sep, body = data.partition(b"\n\n")
    assert sep, f"no header/body separator: {data[:300]!r}"
    return head.decode("utf-8", "replace"), body


def fields(head, name):
    """Values of the header field `name` (unfolded), in order."""
    out, cur = [], None
    for line in head.split("\n"):
        if line[:1] in (" ", "\t"):  # a continuation of the field before
            if cur == name.lower():
                out[-1] += "\n" + line
            continue
        cur = line.split(":", 1)[0].lower()
        if cur == name.lower():
            out.append(line.split(": ", 1)[1] if ": " in line else "")
    return out


BODY = [".leading dot", "..two dots", ".", "Grüße aus dem Test", "x" * 1500, "last line"]


def rcpt(user):
    return f"{user}@{DOMAIN}"


@pytest.mark.parametrize("via", ["tcp", "unix"])
def test_two_recipients_land_in_both_maildirs(make_server, dovecot, via):
    dc = dovecot()
    dest = f"127.0.0.1:{dc.port}" if via == "tcp" else str(dc.socket)
    server = lmtp_server(make_server, dest)
    subject = f"lmtp-{via}"
    message = make_message(subject, BODY, extra_headers=[f"Message-ID: <{subject}@client.test>"])
    reply = send_message(server, [rcpt("alice"), rcpt("bob")], message)
    assert reply.code == 250, (reply, server.log()[-2000:])
    # The last recipient's text from Dovecot: "2.0.0 <bob@dest.test> <id> Saved".
    assert reply.enhanced() == "2.0.0" and f"<{rcpt('bob')}>" in reply.text and "Saved" in reply.text, reply
    for user in ("alice", "bob"):
        [data] = dc.wait_files(user, 1)
        head, body = head_body(data)
        # The envelope as Dovecot got it: the sender in Return-Path and in its Received.
        assert fields(head, "Return-Path") == [f"<{SENDER}>"], head
        received = fields(head, "Received")
        assert len(received) == 2, head
        # Dovecot's Received (from us, our LHLO name = `me`) on top of ringsmtpd's.
        assert received[0].startswith(f"from {ME} ([127.0.0.1])") if via == "tcp" else \
            received[0].startswith(f"from {ME}"), received[0]
        assert "by lmtp.test with LMTP" in received[0] and f"(envelope-from <{SENDER}>)" in received[0], received[0]
        assert f"by {ME} (ringsmtpd/" in received[1] and "(HELO client.test) (127.0.0.1)" in received[1], received[1]
        assert fields(head, "Authentication-Results") == [f"{ME}; auth=none"], head
        assert fields(head, "Subject") == [subject]
        assert fields(head, "Message-ID") == [f"<{subject}@client.test>"]
        assert fields(head, "From") == ["sender@client.test"]
        assert body == ("\n".join(BODY) + "\n").encode()  # dots unstuffed exactly once
    assert dc.files("full") == [] and dc.files("tfull") == []
    # Dovecot's log process writes asynchronously: wait for both lines.
    wait_for(lambda: dc.log().count("saved mail to INBOX") >= 2, 30, "Dovecot's two 'saved mail' lines")
    log = dc.log()
    assert log.count(f"lmtp({rcpt('alice')})") >= 1 and log.count("saved mail to INBOX") == 2, log[-3000:]


def test_unknown_user_refuses_the_message_and_delivers_nothing(make_server, dovecot):
    """Dovecot refuses an unknown user at RCPT (550 5.1.1). queue/lmtp handles RCPT refusals
    as queue/smtp-forward does: nothing is delivered to anyone, and with only 5xx refusals the
    client gets Deny with the refusal's text, the recipient and "(not delivered to any
    recipient)": the sender's bounce tells the truth for alice too (she is not half-served,
    and a corrected retry does not give her a duplicate)."""
    dc = dovecot()
    server = lmtp_server(make_server, f"127.0.0.1:{dc.port}")
    message = make_message("unknown", ["for alice and a ghost"])
    reply = send_message(server, [rcpt("alice"), rcpt("ghost")], message)
    assert (reply.code, reply.enhanced()) == (552, "5.1.1"), reply  # Deny: 552, Dovecot's code
    assert f"<{rcpt('ghost')}>:" in reply.text, reply
    assert "User doesn't exist" in reply.text, reply
    assert "not delivered to any recipient" in reply.text, reply
    time.sleep(0.5)
    assert dc.files("alice") == [], "alice got a message the client was told was refused"
    # The sender corrects the list: alice gets it, once; the pool's connection still works.
    reply = send_message(server, [rcpt("alice")], message)
    assert reply.code == 250, reply
    [data] = dc.wait_files("alice", 1)
    assert data.endswith(b"\n\nfor alice and a ghost\n")


def test_per_recipient_failures_after_the_dot(make_server, dovecot):
    """The LMTP replies after the dot, one per recipient (RFC 2033 §4.2), mapped as the
    plugin's table says: 250 + 552 -> Deny with the 5xx text and "(delivered to 1 of 2
    recipients)"; 250 + 452 -> DenySoft with the 4xx text (alice already has it: the retry
    gives her a second copy, SMTP's at-least-once)."""
    dc = dovecot()
    server = lmtp_server(make_server, f"127.0.0.1:{dc.port}")
    reply = send_message(server, [rcpt("alice"), rcpt("full")], make_message("perm", ["quota"]))
    assert (reply.code, reply.enhanced()) == (552, "5.2.2"), reply
    assert f"<{rcpt('full')}>" in reply.text and "Quota exceeded" in reply.text, reply
    assert "delivered to 1 of 2 recipients" in reply.text, reply
    [data] = dc.wait_files("alice", 1)
    assert b"Subject: perm\n" in data

    reply = send_message(server, [rcpt("alice"), rcpt("tfull")], make_message("temp", ["quota"]))
    assert (reply.code, reply.enhanced()) == (452, "4.2.2"), reply
    assert f"<{rcpt('tfull')}>" in reply.text and "Quota exceeded" in reply.text, reply
    files = dc.wait_files("alice", 2)
    assert sum(b"Subject: temp\n" in f for f in files) == 1
    # All refused after the dot, permanently: Deny without "delivered to".
    reply = send_message(server, [rcpt("full")], make_message("all-perm", ["quota"]))
    assert (reply.code, reply.enhanced()) == (552, "5.2.2"), reply
    assert "delivered to" not in reply.text, reply
    assert dc.files("full") == [] and dc.files("tfull") == []


def test_dovecot_down_gives_4xx_and_the_retry_arrives_once(make_server, dovecot):
    dc = dovecot()
    # One worker: both messages go through its pool, so the second one finds the pooled
    # connection to the Dovecot that is gone.
    server = lmtp_server(make_server, f"127.0.0.1:{dc.port}", threads=1)
    first = make_message("before", ["pooled"])
    assert send_message(server, [rcpt("alice")], first).code == 250
    dc.wait_files("alice", 1)
    dc.stop()
    message = make_message("retry me", ["must not be lost"])
    reply = send_message(server, [rcpt("alice"), rcpt("bob")], message)
    assert (reply.code, reply.enhanced()) == (452, "4.4.1"), reply
    assert "Downstream not reachable" in reply.text, reply
    time.sleep(0.3)
    assert len(dc.files("alice")) == 1 and dc.files("bob") == []
    # The client retries once Dovecot is back: exactly one copy each.
    dc.start()
    reply = send_message(server, [rcpt("alice"), rcpt("bob")], message)
    assert reply.code == 250, reply
    alice = dc.wait_files("alice", 2)
    bob = dc.wait_files("bob", 1)
    assert sum(f.endswith(b"\n\nmust not be lost\n") for f in alice) == 1, alice
    assert len(bob) == 1 and bob[0].endswith(b"\n\nmust not be lost\n"), bob
    assert list(server.spool.iterdir()) == []
