"""Content scanners against the real daemons: `spamassassin` with SpamAssassin's spamd (its
rules from the Debian package, no sa-update) and `virus/clamdscan` with clamd and a virus
database the test writes (no freshclam). Each daemon is private: loopback, free port, its own
directory, stopped at the end (recipes: shared/reference/real-peers.md)."""

import os
import re
import shutil
import signal
import socket
import subprocess

import pytest

from conftest import free_port, private_dir, send_message, wait_for

SPAMD = "/usr/sbin/spamd"
CLAMD = "/usr/sbin/clamd"
INSTALL_HELP = "tests/run installs spamassassin, spamc, clamav-daemon and clamav"

GTUBE = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"
EICAR = r"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"


def message(subject, body):
    return (f"From: <sender@client.test>\r\nTo: <rcpt@example.test>\r\nSubject: {subject}\r\n"
            f"Message-ID: <{subject.replace(' ', '.')}@client.test>\r\n\r\n{body}\r\n").encode()


CLEAN = message("lunch", "Shall we meet for lunch on Thursday at noon?")


class Daemon:
    """A scanner daemon started in its own session; stop() ends its process group."""

    def __init__(self, name, argv, base, ready):
        self.name, self.base = name, base
        self.out = open(base / f"{name}.out", "ab")
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=self.out,
                                     stderr=self.out, start_new_session=True)

        def up():
            if self.proc.poll() is not None:
                pytest.fail(f"{name} exited with {self.proc.returncode} at start:\n{self.log()}")
            return ready()

        wait_for(up, 90, f"the private {name} to answer", interval=0.1)

    def log(self):
        return "".join(p.read_text(errors="replace")[-3000:] for p in self.base.glob("*.out")) + \
            "".join(p.read_text(errors="replace")[-3000:] for p in self.base.glob("*.log"))

    def stop(self):
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        # spamd's children are in the group too: none may outlive the test.
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.out.close()


def tcp_answers(port, request, expect):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
            s.sendall(request)
            return expect in s.recv(256)
    except OSError:
        return False


def unix_answers(path, request, expect):
    try:
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(2)
            s.connect(str(path))
            s.sendall(request)
            return expect in s.recv(256)
    except OSError:
        return False


@pytest.fixture(scope="module")
def spamd():
    if not os.access(SPAMD, os.X_OK):
        pytest.fail(f"{SPAMD} not found: {INSTALL_HELP}")
    base = private_dir("ringsmtpd-spamd-")
    port = free_port()
    d = Daemon("spamd", [SPAMD, "-L", "-x", f"--listen=127.0.0.1:{port}", "--allowed-ips=127.0.0.1",
                         "-u", "debian-spamd", "-g", "debian-spamd", "--min-children=1",
                         "--max-children=1", f"--pidfile={base}/spamd.pid", "--syslog=stderr"],
               base, lambda: tcp_answers(port, b"PING SPAMC/1.5\r\n\r\n", b"PONG"))
    d.port = port
    yield d
    d.stop()
    shutil.rmtree(base, ignore_errors=True)


def start_clamd(base, stream_max="5M", extra=""):
    """clamd on a free TCP port and a unix socket, with a database this test writes;
    `stream_max` is its StreamMaxLength, `extra` more config lines."""
    db = base / "db"
    db.mkdir(exist_ok=True)
    ndb = b"EICAR-STANDARD-ANTIVIRUS-TEST-FILE".hex()
    (db / "test.ndb").write_text(f"Eicar-Ndb:0:*:{ndb}\n")
    port = free_port()
    conf = base / "clamd.conf"
    conf.write_text(f"DatabaseDirectory {db}\nTCPSocket {port}\nTCPAddr 127.0.0.1\n"
                    f"LocalSocket {base}/clamd.sock\nForeground yes\nLogFile {base}/clamd.log\n"
                    f"PidFile {base}/clamd.pid\nStreamMaxLength {stream_max}\n{extra}")
    d = Daemon("clamd", [CLAMD, "-c", str(conf)], base,
               lambda: unix_answers(base / "clamd.sock", b"zPING\0", b"PONG"))
    d.port, d.socket = port, base / "clamd.sock"
    return d


@pytest.fixture(scope="module")
def clamd():
    if not os.access(CLAMD, os.X_OK):
        pytest.fail(f"{CLAMD} not found: {INSTALL_HELP}")
    base = private_dir("ringsmtpd-clamd-")
    d = start_clamd(base)
    yield d
    d.stop()
    shutil.rmtree(base, ignore_errors=True)


def header_of(delivered):
    """The header section of a delivered file as text, LF line ends, and its body."""
    text = delivered.decode("utf-8", "replace").replace("\r\n", "\n")
    head, _, body = text.partition("\n\n")
    return head + "\n", body


def plugins(*scanner):
    return ["rcpt_ok", *scanner, "queue/maildir {maildir}"]


# --- spamd ------------------------------------------------------------------------------------

def test_gtube_is_rejected_with_its_score(make_server, spamd):
    srv = make_server(plugins=plugins(f"spamassassin reject 10 spamd_socket 127.0.0.1:{spamd.port}"))
    r = send_message(srv, ["rcpt@example.test"], message("offer", f"Buy now!\r\n{GTUBE}"))
    assert (r.code, r.enhanced()) == (550, "5.7.1"), r
    assert re.search(r"^5\.7\.1 Spam score 10[0-9][0-9]\.[0-9] exceeds the threshold 10$", r.text), r
    srv.maildir.assert_empty()
    srv.wait_log("fail, Spam 10")


def test_clean_message_is_delivered_with_spamd_headers(make_server, spamd):
    srv = make_server(plugins=plugins(f"spamassassin reject 10 spamd_socket 127.0.0.1:{spamd.port}"))
    r = send_message(srv, ["rcpt@example.test"], CLEAN)
    assert r.code == 250, r
    head, body = header_of(srv.maildir.only())
    assert "\nX-Spam-Status: No, score=" in head, head
    assert "\nX-Spam-Checker-Version: SpamAssassin" in head, head
    assert body.startswith("Shall we meet for lunch")
    srv.wait_log("pass, Ham")


@pytest.mark.parametrize("spooled", [False, True])
def test_spam_gets_a_munged_subject_and_forged_verdicts_renamed(make_server, spamd, spooled):
    # size_threshold 100: the message goes to a spool file, whose header section is rewritten.
    srv = make_server(plugins=plugins(f"spamassassin spamd_socket 127.0.0.1:{spamd.port} "
                                      "munge_subject_threshold 8 subject_prefix [SPAM]"),
                      settings={"size_threshold": 100} if spooled else {})
    forged = message("offer", f"Buy now!\r\n{GTUBE}").replace(
        b"Subject:", b"X-Spam-Status: No, score=-5.0\r\nX-Spam-Flag: NO\r\nSubject:")
    assert send_message(srv, ["rcpt@example.test"], forged).code == 250
    head, body = header_of(srv.maildir.only())
    assert "\nSubject: [SPAM] offer\n" in head and head.count("Subject:") == 1, head
    assert "\nX-Old-Spam-Status: No, score=-5.0\n" in head, head
    assert "\nX-Old-Spam-Flag: NO\n" in head, head
    assert "\nX-Spam-Flag: YES\n" in head, head
    assert re.search(r"\nX-Spam-Status: Yes, score=", head), head
    assert "X-Spam-Status: No" not in head.replace("X-Old-Spam-Status: No", ""), head
    assert body.startswith("Buy now!")


def test_spamd_unreachable_defers(make_server):
    srv = make_server(plugins=plugins(f"spamassassin spamd_socket 127.0.0.1:{free_port()}"))
    r = send_message(srv, ["rcpt@example.test"], CLEAN)
    assert (r.code, r.enhanced()) == (451, "4.7.1"), r
    srv.maildir.assert_empty()
    srv.wait_log("cannot connect")


# --- clamd ------------------------------------------------------------------------------------

def test_eicar_is_refused_with_the_signature_name(make_server, clamd):
    srv = make_server(plugins=plugins(f"virus/clamdscan clamd_port {clamd.port}"))
    r = send_message(srv, ["rcpt@example.test"], message("tool", f"see this:\r\n{EICAR}"))
    assert (r.code, r.enhanced()) == (552, "5.7.0"), r
    assert "Virus found: Eicar-Ndb.UNOFFICIAL" in r.text, r
    srv.maildir.assert_empty()
    srv.wait_log("fail, found virus Eicar-Ndb.UNOFFICIAL")


def test_clean_message_is_delivered_over_the_unix_socket(make_server, clamd):
    srv = make_server(plugins=plugins(f"virus/clamdscan clamd_socket {clamd.socket}"))
    r = send_message(srv, ["rcpt@example.test"], CLEAN)
    assert r.code == 250, r
    head, _ = header_of(srv.maildir.only())
    assert "\nX-Virus-Found: No\n" in head, head
    assert "\nX-Virus-Checked: by clamd on mx.test\n" in head, head


def test_spooled_message_is_streamed_whole(make_server, clamd):
    # 300 KB, spooled (size_threshold 10 KB), EICAR in the last piece: only a scan of the
    # whole spool file, in several chunks, finds it.
    filler = "".join(f"line {i:06d} of an ordinary long message\r\n" for i in range(7000))
    srv = make_server(plugins=plugins(f"virus/clamdscan clamd_port {clamd.port} max_size 2048"),
                      settings={"size_threshold": 10000})
    r = send_message(srv, ["rcpt@example.test"], message("big", f"{filler}{EICAR}"))
    assert (r.code, r.enhanced()) == (552, "5.7.0"), r
    assert "Eicar-Ndb" in r.text
    # The same size without the virus goes through.
    r = send_message(srv, ["rcpt@example.test"], message("big clean", filler))
    assert r.code == 250, r
    head, _ = header_of(srv.maildir.only())
    assert "\nX-Virus-Found: No\n" in head, head


def test_over_max_size_is_skipped_with_a_header(make_server, clamd):
    srv = make_server(plugins=plugins(f"virus/clamdscan clamd_port {clamd.port} max_size 1"))
    r = send_message(srv, ["rcpt@example.test"], message("large", "x" * 3000 + f"\r\n{EICAR}"))
    assert r.code == 250, r
    head, _ = header_of(srv.maildir.only())
    assert "\nX-Virus-Checked: skipped, over max_size (1 KiB) on mx.test\n" in head, head
    srv.wait_log("skip, too big")


def test_clamd_stopped_defers_then_accepts_unscanned_when_told(make_server):
    base = private_dir("ringsmtpd-clamd-stop-")
    d = start_clamd(base)
    try:
        srv = make_server(plugins=plugins(f"virus/clamdscan clamd_port {d.port}"))
        assert send_message(srv, ["rcpt@example.test"], CLEAN).code == 250
        d.stop()
        r = send_message(srv, ["rcpt@example.test"], CLEAN)
        assert (r.code, r.enhanced()) == (451, "4.7.1"), r
        assert len(srv.maildir.messages()) == 1, "nothing unscanned was delivered"
        srv.wait_log("error, deferred")

        lax = make_server(plugins=plugins(f"virus/clamdscan clamd_port {d.port} defer_on_error no"))
        assert send_message(lax, ["rcpt@example.test"], CLEAN).code == 250
        head, _ = header_of(lax.maildir.only())
        assert "\nX-Virus-Checked: not scanned, virus/clamdscan error\n" in head, head
    finally:
        d.stop()
        shutil.rmtree(base, ignore_errors=True)
