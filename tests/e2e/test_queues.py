"""The local queue plugins end to end, each against the real thing on this machine:

- queue/postfix-queue into a private Postfix instance (own config and queue directories under
  /tmp/ringsmtpd-pfq.*, no listener; its `public/cleanup` socket), delivered by Postfix's
  `virtual` agent into a Maildir, or held (FLAG_HOLD) and read back with `postcat`;
- queue/exim-bsmtp into Exim 4 (`exim4-daemon-light`) run with a private `-C` config (own
  spool, log and Maildir under /tmp/ringsmtpd-exim.*);
- queue/maildir on a full disk: a 64 KiB tmpfs mounted by the test;
- queue/qmail-queue against a TEST PROGRAM that implements qmail-queue's documented fd
  protocol and exit codes (there is no qmail package: it is not qmail).

Postfix's master and Exim's -C need root (CI runs as root). Debian's `postfix` and
`exim4-daemon-light` conflict (both are the MTA): tests/run installs Postfix and unpacks the
exim4-daemon-light package into /opt/ringsmtpd-exim instead of installing it (see EXIM_HELP).
"""

import os
import pathlib
import shutil
import subprocess
import tempfile
import time

import pytest

from conftest import ME, make_message, private_dir, send_message, wait_for

SENDER = "sender@client.test"

EXIM_CANDIDATES = [
    os.environ.get("RINGSMTPD_EXIM", ""),
    "/usr/sbin/exim4",
    "/opt/ringsmtpd-exim/usr/sbin/exim4",
]
EXIM_HELP = (
    "Exim is missing. Debian's exim4-daemon-light conflicts with postfix, so unpack it instead "
    "of installing it (as root): `apt-get install -y libidn12 libgnutls-dane0 libpcre2-8-0 "
    "libdb5.3 libnsl2 && cd $(mktemp -d) && apt-get download exim4-daemon-light && "
    "dpkg-deb -x exim4-daemon-light_*.deb /opt/ringsmtpd-exim && "
    "(getent passwd Debian-exim || useradd --system --user-group --no-create-home "
    "--shell /usr/sbin/nologin Debian-exim)`; or set RINGSMTPD_EXIM to an exim binary"
)


def need_root(what):
    if os.geteuid() != 0:
        pytest.fail(f"{what} needs root (CI runs as root)")


def maildir_files(path, deadline=60, n=1):
    new = pathlib.Path(path) / "new"
    wait_for(lambda: new.is_dir() and len(list(new.iterdir())) >= n, deadline,
             f"{n} file(s) in {new}")
    return sorted(new.iterdir())


BODY_LINES = [
    "First line.",
    ".a line starting with a dot",
    ".",
    "..",
    "x" * 3000,  # longer than Postfix's 2048-byte records: L records, then N
    "last line",
]


def standard_message(subject):
    return make_message(subject, BODY_LINES, extra_headers=[f"Message-ID: <{subject}@client.test>"])


def split_head_body(data):
    head, sep, body = data.partition(b"\n\n")
    assert sep, f"no header/body separator in {data[:300]!r}"
    return head.decode("utf-8", "replace"), body


def assert_our_headers(head, subject):
    """The headers ringsmtpd added and the client's own, in the delivered header section."""
    assert f"Authentication-Results: {ME}; auth=none" in head, head
    assert f"\tby {ME} (ringsmtpd/" in head, head
    assert "Received: from " in head and "(HELO client.test) (127.0.0.1)" in head, head
    assert f"Subject: {subject}\n" in head, head
    assert f"Message-ID: <{subject}@client.test>" in head, head


# ---------------------------------------------------------------------------------------------
# Postfix

# What queue/postfix-queue's destination needs beyond private_postfix's core: mail for
# pfdest.test, a size limit and a header check to refuse with.
PF_QUEUE_MAIN_CF = {
    "message_size_limit": "200000",
    "header_checks": "regexp:{base}/etc/header_checks",
}


@pytest.fixture
def postfix(make_postfix):
    """A private Postfix with no listener (and no pickup): cleanup's public socket (.socket)
    takes the mail, the `virtual` agent delivers pfdest.test into .mailbox."""
    pf = make_postfix("ringsmtpd-pfq.", "postfix.test", start=False, main=PF_QUEUE_MAIN_CF,
                      virtual_domain="pfdest.test")
    (pf.etc / "header_checks").write_text("/^Subject: reject-me/ REJECT no thanks, said header_checks\n")
    return pf.start()


def pf_server(make_server, pf, args="FLAG_MASK_EXTERNAL", settings=None):
    s = {"rcpthosts": "pfdest.test"}
    s.update(settings or {})
    return make_server(plugins=["rcpt_ok", f"queue/postfix-queue {pf.socket} {args}"], settings=s)


def queue_id_of(reply):
    assert reply.code == 250, reply
    text = reply.text
    assert "(Queue-Id: " in text, reply
    return text.split("(Queue-Id: ", 1)[1].rstrip(")")


def test_postfix_queue_delivers_through_postfix(make_server, postfix):
    server = pf_server(make_server, postfix)
    rcpts = ["one@pfdest.test", "two@pfdest.test"]
    message = standard_message("via-cleanup")
    reply = send_message(server, rcpts, message)
    qid = queue_id_of(reply)
    assert reply.text.startswith("2.0.0 Queued! <via-cleanup@client.test> (Queue-Id: "), reply
    files = maildir_files(postfix.mailbox, n=2)
    assert len(files) == 2
    seen = set()
    for f in files:
        head, body = split_head_body(f.read_bytes())
        # Postfix's virtual agent writes the envelope into the header.
        assert f"Return-Path: <{SENDER}>" in head, head
        rcpt = [r for r in rcpts if f"Delivered-To: {r}\n" in head + "\n"]
        assert len(rcpt) == 1, head
        seen.add(rcpt[0])
        assert_our_headers(head, "via-cleanup")
        # cleanup took the content as it came: no Received of its own from an SMTP hop.
        assert "by postfix.test (Postfix" not in head, head
        assert body == ("\n".join(BODY_LINES) + "\n").encode()
    assert seen == set(rcpts)
    log = postfix.log()
    assert f"{qid}: from=<{SENDER}>" in log, log
    assert f"{qid}: client=unknown[127.0.0.1]" not in log  # not an smtpd: no client= line
    assert log.count(f"{qid}: to=<") == 2 and "status=sent (delivered to maildir)" in log, log


def test_postfix_queue_envelope_and_content_in_the_queue_file(make_server, postfix):
    """FLAG_HOLD keeps the message in Postfix's hold queue, where postcat shows the queue file:
    envelope records and content as cleanup stored them. The message is spooled on our side
    (size_threshold 0) and sent from the spool file."""
    server = pf_server(make_server, postfix, "FLAG_HOLD", settings={"size_threshold": "0"})
    message = standard_message("held")
    qid = queue_id_of(send_message(server, ["held@pfdest.test"], message, sender=""))
    wait_for(lambda: qid in postfix.queue_listing(), 30, "the held message in postqueue -p")
    env = postfix.postcat(qid, "-e")
    assert "\nsender: \n" in env, env  # the null sender <>
    assert "\nrecipient: held@pfdest.test\n" in env, env
    for attr in ("rewrite_context=remote", "log_client_address=127.0.0.1",
                 "log_helo_name=client.test", "log_protocol_name=ESMTP"):
        assert f"named_attribute: {attr}\n" in env, env
    content = postfix.postcat(qid, "-h", "-b")
    head, body = split_head_body(content.encode())
    assert_our_headers(head, "held")
    assert body == ("\n".join(BODY_LINES) + "\n").encode()
    assert not postfix.mailbox.exists() or not any((postfix.mailbox / "new").iterdir())


def test_postfix_queue_refusals_and_outage(make_server, postfix):
    server = pf_server(make_server, postfix, "FLAG_MASK_EXTERNAL")
    # message_size_limit (200000): cleanup's SIZE status, Postfix's 552 5.3.4.
    big = make_message("too-big", ["y" * 998] * 300)
    r = send_message(server, ["one@pfdest.test"], big)
    assert (r.code, r.enhanced()) == (552, "5.3.4"), r
    # header_checks REJECT (FLAG_FILTER is in FLAG_MASK_EXTERNAL): 550 with its text.
    r = send_message(server, ["one@pfdest.test"], make_message("reject-me please", ["x"]))
    assert (r.code, r.enhanced()) == (550, "5.7.1"), r
    assert "no thanks, said header_checks" in r.text, r
    # Nothing was queued or delivered for either.
    time.sleep(1)
    assert "Mail queue is empty" in postfix.queue_listing(), postfix.queue_listing()
    assert not postfix.mailbox.exists() or not any((postfix.mailbox / "new").iterdir())
    # Postfix down: 451, the client keeps the message.
    postfix.stop()
    wait_for(lambda: not postfix.socket.exists() or _refused(postfix.socket), 30, "cleanup to go away")
    r = send_message(server, ["one@pfdest.test"], standard_message("outage"))
    assert (r.code, r.enhanced()) == (451, "4.3.0"), r
    assert "cannot connect to cleanup" in server.log()


def _refused(path):
    import socket as _s

    s = _s.socket(_s.AF_UNIX, _s.SOCK_STREAM)
    try:
        s.connect(str(path))
        return False
    except OSError:
        return True
    finally:
        s.close()


# ---------------------------------------------------------------------------------------------
# Exim

EXIM_CONF = """\
exim_path = {exim}
keep_environment =
primary_hostname = exim.test
spool_directory = {base}/spool
log_file_path = {base}/log/%slog
message_size_limit = 100K
begin routers
all:
  driver = accept
  transport = maildir
begin transports
maildir:
  driver = appendfile
  directory = {base}/Maildir
  maildir_format
  envelope_to_add
  return_path_add
  user = Debian-exim
"""


class Exim:
    def __init__(self, exim):
        self.exim = exim
        self.base = private_dir("ringsmtpd-exim.")
        for d in ("spool", "log", "Maildir"):
            (self.base / d).mkdir()
            shutil.chown(self.base / d, user="Debian-exim", group="Debian-exim")
        self.conf = self.base / "exim.conf"
        self.conf.write_text(EXIM_CONF.format(exim=exim, base=self.base))
        # What the plugin runs: exim with the private config. A wrapper, as an admin would
        # write one for extra options; `-bS` is added by the plugin.
        self.wrapper = self.base / "exim-private"
        self.wrapper.write_text(f"#!/bin/sh\nexec {exim} -C {self.conf} \"$@\"\n")
        self.wrapper.chmod(0o755)
        self.maildir = self.base / "Maildir"

    def log(self):
        p = self.base / "log" / "mainlog"
        return p.read_text(errors="replace") if p.exists() else "(no exim mainlog)"


@pytest.fixture
def exim():
    found = next((p for p in EXIM_CANDIDATES if p and os.access(p, os.X_OK)), None)
    if not found:
        pytest.fail(EXIM_HELP)
    need_root("Exim with a private -C config")
    try:
        subprocess.run(["getent", "passwd", "Debian-exim"], check=True, capture_output=True)
    except subprocess.CalledProcessError:
        pytest.fail("the Debian-exim user is missing (exim4's compiled-in user). " + EXIM_HELP)
    e = Exim(found)
    yield e
    shutil.rmtree(e.base, ignore_errors=True)


def exim_server(make_server, ex):
    return make_server(plugins=["rcpt_ok", f"queue/exim-bsmtp exim_path {ex.wrapper}"],
                       settings={"rcpthosts": "eximdest.test"})


def test_exim_bsmtp_delivers_through_exim(make_server, exim):
    server = exim_server(make_server, exim)
    rcpts = ["one@eximdest.test", "two@eximdest.test"]
    reply = send_message(server, rcpts, standard_message("via-bsmtp"))
    assert (reply.code, reply.text) == (250, "2.0.0 Queued! <via-bsmtp@client.test>"), reply
    files = maildir_files(exim.maildir, n=2)
    seen = set()
    for f in files:
        head, body = split_head_body(f.read_bytes())
        assert f"Return-path: <{SENDER}>" in head, head  # root is trusted: MAIL FROM honoured
        env_to = [r for r in rcpts if f"Envelope-to: {r}\n" in head + "\n"]
        assert len(env_to) == 1, head
        seen.add(env_to[0])
        assert "with local-bsmtp (Exim" in head, head
        assert_our_headers(head, "via-bsmtp")
        assert body == ("\n".join(BODY_LINES) + "\n").encode()  # dots undone by exim: stuffed once
    assert seen == set(rcpts)
    assert "<= sender@client.test U=root P=local-bsmtp" in exim.log(), exim.log()


def test_exim_bsmtp_relays_exims_refusal_and_its_absence(make_server, exim):
    server = exim_server(make_server, exim)
    # message_size_limit = 100K in the private config: Exim refuses in BSMTP, we relay it.
    r = send_message(server, ["one@eximdest.test"], make_message("big", ["z" * 998] * 150))
    assert r.code == 552 and r.enhanced() == "5.3.0", r
    assert "size" in r.text.lower(), r
    time.sleep(0.5)
    assert not any((exim.maildir / "new").glob("*")) if (exim.maildir / "new").exists() else True
    assert "-bS failed" in server.log()
    # The wrapper now points at a config Exim cannot read: it fails, the client gets 451.
    exim.conf.unlink()
    r = send_message(server, ["one@eximdest.test"], standard_message("no-config"))
    assert r.code == 451 and r.enhanced() and r.enhanced().startswith("4."), r


# ---------------------------------------------------------------------------------------------
# Maildir on a full disk


@pytest.fixture
def small_tmpfs():
    need_root("mounting a tmpfs")
    mnt = pathlib.Path(tempfile.mkdtemp(prefix="ringsmtpd-full.", dir="/tmp"))
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k,mode=0755", "tmpfs", str(mnt)],
                       capture_output=True, timeout=30)
    if r.returncode != 0:
        pytest.fail(f"cannot mount a 64 KiB tmpfs for the full-disk test ({r.stderr!r}): it needs "
                    "root with CAP_SYS_ADMIN (CI has it)")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True, timeout=30)
        shutil.rmtree(mnt, ignore_errors=True)


def test_maildir_full_disk_is_452_and_leaves_nothing(make_server, small_tmpfs):
    md = small_tmpfs / "Maildir"
    server = make_server(plugins=["rcpt_ok", f"queue/maildir {md}"])
    big = make_message("fills-the-disk", ["w" * 998] * 100)  # ~100 KB > 64 KiB
    r = send_message(server, ["one@example.test"], big)
    assert (r.code, r.enhanced()) == (452, "4.3.1"), r
    assert "No space" in server.log() or "no storage space" in server.log().lower(), server.log()[-2000:]
    assert list((md / "new").iterdir()) == [], "a message landed in new/"
    assert list((md / "tmp").iterdir()) == [], "a partial file was left in tmp/"
    # The space is back: a small message goes through, whole.
    small = make_message("fits", ["small"])
    r = send_message(server, ["one@example.test"], small)
    assert r.code == 250, r
    [f] = list((md / "new").iterdir())
    assert f.read_bytes().endswith(small.replace(b"\r\n", b"\n"))


# ---------------------------------------------------------------------------------------------
# qmail-queue (a test program, not qmail)

FAKE_QMAIL_QUEUE = """\
#!/usr/bin/env python3
# A TEST PROGRAM, not qmail (there is no qmail package): it implements qmail-queue's documented
# protocol (qmail-queue(8)): the message on fd 0, then the envelope on fd 1
# (F<sender>\\0 T<rcpt>\\0 ... \\0); a malformed envelope exits 91 without queueing; it "queues"
# by writing both into its directory, then exits with the code in its `code` file
# ("hang" = never exits).
import os, re, sys, time
d = os.path.dirname(os.path.abspath(__file__))
msg = os.fdopen(0, "rb").read()
env = os.fdopen(1, "rb").read()
if not re.fullmatch(rb"F[^\\0]*\\0(T[^\\0]+\\0)+\\0", env, re.S):
    sys.exit(91)
code = open(os.path.join(d, "code")).read().strip()
if code == "hang":
    time.sleep(3600)
n = len([f for f in os.listdir(d) if f.startswith("message.")])
open(os.path.join(d, f"message.{n}"), "wb").write(msg)
open(os.path.join(d, f"envelope.{n}"), "wb").write(env)
sys.exit(int(code))
"""


def test_qmail_queue_with_a_test_program(make_server, tmp_path):
    qq = tmp_path / "qq"
    qq.mkdir()
    prog = qq / "qmail-queue"
    prog.write_text(FAKE_QMAIL_QUEUE)
    prog.chmod(0o755)
    (qq / "code").write_text("0")
    server = make_server(plugins=["rcpt_ok", f"queue/qmail-queue {prog} timeout 2"])
    message = standard_message("via-qq")
    r = send_message(server, ["one@example.test", "two@example.test"], message)
    assert r.code == 250 and " qp " in r.text and r.text.endswith("<via-qq@client.test>"), r
    assert (qq / "envelope.0").read_bytes() == f"F{SENDER}\0Tone@example.test\0Ttwo@example.test\0\0".encode()
    head, body = split_head_body((qq / "message.0").read_bytes())
    assert_our_headers(head, "via-qq")
    assert body == ("\n".join(BODY_LINES) + "\n").encode()
    # Documented exit codes: permanent and temporary.
    for code, smtp, enhanced, text in [
        ("31", 554, "5.3.0", "mail server permanently rejected message"),
        ("53", 451, "4.3.0", "qq write error or disk full"),
        ("71", 451, "4.3.0", "mail server temporarily rejected message"),
    ]:
        (qq / "code").write_text(code)
        r = send_message(server, ["one@example.test"], make_message(f"code-{code}", ["x"]))
        assert (r.code, r.enhanced(), r.text) == (smtp, enhanced, f"{enhanced} {text}"), (code, r)
    # A qmail-queue that hangs is killed at the plugin's timeout (2 s): 451, and the server
    # answers other clients meanwhile (the child runs off the worker).
    (qq / "code").write_text("hang")
    started = time.monotonic()
    r = send_message(server, ["one@example.test"], make_message("hang", ["x"]))
    assert (r.code, r.enhanced()) == (451, "4.3.0"), r
    assert "qq timeout" in r.text
    assert time.monotonic() - started < 15
    assert "killed after" in server.log()
