"""Command-line scanners: `virus/clamav` with the real clamscan and a virus database the test
writes (no freshclam; recipe: shared/reference/real-peers.md), and the bad inputs every
command scanner must survive (a scanner that hangs, floods its output, exits with an unknown
code or prints control characters), played by stand-in programs the test writes. The
proprietary scanners and dspam are not available anywhere here: `virus/sophie` is tested
against a stand-in daemon on a unix socket and `dspam` against a stand-in program."""

import base64
import os
import pathlib
import socket
import threading
import time

import pytest

from conftest import send_message, wait_for

CLAMSCAN = "/usr/bin/clamscan"
EICAR = r"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"


def message(subject, body, extra=""):
    return (f"From: <sender@client.test>\r\nTo: <rcpt@example.test>\r\nSubject: {subject}\r\n"
            f"Message-ID: <{subject.replace(' ', '.')}@client.test>\r\n{extra}\r\n{body}\r\n").encode()


CLEAN = message("lunch", "Shall we meet for lunch on Thursday at noon?")


def with_attachment(subject, payload):
    b64 = base64.encodebytes(payload.encode()).decode().replace("\n", "\r\n")
    body = ("--b1\r\nContent-Type: text/plain\r\n\r\nsee the attachment\r\n"
            "--b1\r\nContent-Type: application/octet-stream; name=\"tool.com\"\r\n"
            "Content-Transfer-Encoding: base64\r\n"
            "Content-Disposition: attachment; filename=\"tool.com\"\r\n\r\n"
            f"{b64}--b1--")
    return message(subject, body,
                   "MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b1\"\r\n")


def plugins(*scanner):
    return ["rcpt_ok", *scanner, "queue/maildir {maildir}"]


def header_of(delivered):
    text = delivered.decode("utf-8", "replace").replace("\r\n", "\n")
    head, _, body = text.partition("\n\n")
    return head + "\n", body


@pytest.fixture
def database(tmp_path):
    if not os.access(CLAMSCAN, os.X_OK):
        pytest.fail(f"{CLAMSCAN} not found: tests/run installs clamav")
    db = tmp_path / "clamdb"
    db.mkdir()
    ndb = b"EICAR-STANDARD-ANTIVIRUS-TEST-FILE".hex()
    (db / "test.ndb").write_text(f"Eicar-Ndb:0:*:{ndb}\n")
    return db


def stand_in(tmp_path, name, body):
    path = tmp_path / name
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)
    return path


# --- clamscan ---------------------------------------------------------------------------------

def test_clamscan_refuses_eicar_plain_and_attached_and_delivers_clean(make_server, database):
    srv = make_server(plugins=plugins(
        f"virus/clamav clamscan_path={CLAMSCAN} database={database} action=reject timeout=20"))
    for msg in (message("tool", f"see this:\r\n{EICAR}"), with_attachment("attached", EICAR)):
        r = send_message(srv, ["rcpt@example.test"], msg)
        assert (r.code, r.enhanced()) == (552, "5.7.1"), r
        assert "Virus found: Eicar-Ndb.UNOFFICIAL" in r.text, r
    srv.maildir.assert_empty()
    srv.wait_log("fail, found virus Eicar-Ndb.UNOFFICIAL", count=2)
    r = send_message(srv, ["rcpt@example.test"], CLEAN)
    assert r.code == 250, r
    head, body = header_of(srv.maildir.only())
    assert "\nX-Virus-Checked: Checked by ClamAV on mx.test\n" in head, head
    assert body.startswith("Shall we meet for lunch")
    srv.wait_log("pass, clean")


def test_clamscan_scans_a_spooled_message_in_place(make_server, database, tmp_path):
    # 300 KB, spooled (size_threshold 10 KB), EICAR at the end: clamscan reads the spool file.
    filler = "".join(f"line {i:06d} of an ordinary long message\r\n" for i in range(7000))
    tmp = tmp_path / "scan-tmp"
    tmp.mkdir()
    srv = make_server(plugins=plugins(
        f"virus/clamav {CLAMSCAN} database={database} action=reject max_size=2000000 "
        f"tmp_dir={tmp} timeout=20"), settings={"size_threshold": 10000})
    r = send_message(srv, ["rcpt@example.test"], message("big", f"{filler}{EICAR}"))
    assert (r.code, r.enhanced()) == (552, "5.7.1"), r
    # A message held in memory goes through a temporary file, removed after the scan.
    r = send_message(srv, ["rcpt@example.test"], message("small", EICAR))
    assert (r.code, r.enhanced()) == (552, "5.7.1"), r
    wait_for(lambda: not any(tmp.iterdir()), 10, "the temporary copy to be removed")
    srv.maildir.assert_empty()


def test_clamscan_without_a_database_defers(make_server, tmp_path):
    empty = tmp_path / "empty-db"
    empty.mkdir()
    srv = make_server(plugins=plugins(
        f"virus/clamav clamscan_path={CLAMSCAN} database={empty} timeout=20"))
    r = send_message(srv, ["rcpt@example.test"], CLEAN)
    assert (r.code, r.enhanced()) == (451, "4.7.1"), r
    srv.maildir.assert_empty()
    srv.wait_log("error, deferred")


# --- bad scanners -----------------------------------------------------------------------------

def test_a_hanging_scanner_is_killed_and_the_message_deferred(make_server, tmp_path):
    pids = tmp_path / "pids"
    hang = stand_in(tmp_path, "clamscan", f"sleep 120 & echo $! $$ > {pids}; wait")
    srv = make_server(plugins=plugins(f"virus/clamav clamscan_path={hang} timeout=2"))
    r = send_message(srv, ["rcpt@example.test"], CLEAN)
    assert (r.code, r.enhanced()) == (451, "4.7.1"), r
    srv.maildir.assert_empty()
    srv.wait_log("ran past the timeout (2s) and was killed")
    for pid in pids.read_text().split():
        wait_for(lambda: not pathlib.Path(f"/proc/{pid}").exists(), 20,
                 f"scanner process {pid} to be gone")
    # The server still answers and scans.
    ok = stand_in(tmp_path, "clean", "exit 0")
    srv2 = make_server(plugins=plugins(f"virus/clamav clamscan_path={ok}"))
    assert send_message(srv2, ["rcpt@example.test"], CLEAN).code == 250


def test_flood_unknown_code_and_control_characters(make_server, tmp_path):
    flood = stand_in(tmp_path, "flood",
                     'echo "$4: Worm.Flood FOUND"; head -c 8000000 /dev/zero | tr "\\0" x; exit 1')
    srv = make_server(plugins=plugins(f"virus/clamav clamscan_path={flood} action=reject"))
    r = send_message(srv, ["rcpt@example.test"], CLEAN)
    assert (r.code, r.enhanced()) == (552, "5.7.1"), r
    assert r.text.endswith("Virus found: Worm.Flood"), r

    odd = stand_in(tmp_path, "odd", "echo 'weird'; exit 77")
    srv = make_server(plugins=plugins(f"virus/uvscan uvscan_location {odd}"))
    r = send_message(srv, ["rcpt@example.test"], with_attachment("odd", "hello"))
    assert (r.code, r.enhanced()) == (451, "4.7.1"), r
    srv.wait_log("unknown exit (exit code 77)")
    srv.maildir.assert_empty()

    evil = stand_in(tmp_path, "evil",
                    r'printf "$4: Evil\033[31m\r\nX-Injected: yes\001 FOUND\n"; exit 1')
    srv = make_server(plugins=plugins(f"virus/clamav clamscan_path={evil} action=reject"))
    r = send_message(srv, ["rcpt@example.test"], CLEAN)
    assert (r.code, r.enhanced()) == (552, "5.7.1"), r
    assert "\x1b" not in r.text and "\x01" not in r.text, r
    lax = make_server(plugins=plugins(f"virus/clamav clamscan_path={evil}"))
    r = send_message(lax, ["rcpt@example.test"], CLEAN)
    assert r.code == 250, r
    head, _ = header_of(lax.maildir.only())
    assert "\nX-Injected" not in head, head
    assert "\x1b" not in head and "\x1b" not in lax.log(), head


# --- sophie (stand-in daemon) -----------------------------------------------------------------

class StandInSophie:
    """Answers each `PATH\\n` with `1:EICAR-AV-Test` if the file holds EICAR (as text: this
    stand-in decodes nothing), else `0`."""

    def __init__(self, path):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.bind(str(path))
        self.sock.listen(8)
        self.sock.settimeout(0.2)
        self.stopping = False
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self):
        while not self.stopping:
            try:
                conn, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            with conn:
                conn.settimeout(5)
                line = conn.makefile("rb").readline().decode().strip()
                try:
                    text = pathlib.Path(line).read_text(errors="replace")
                    conn.sendall(b"1:EICAR-AV-Test\n" if "EICAR-STANDARD" in text else b"0\n")
                except OSError:
                    conn.sendall(b"-1:cannot read\n")

    def stop(self):
        self.stopping = True
        self.thread.join(timeout=5)
        self.sock.close()


def test_sophie_stand_in_daemon(make_server, tmp_path):
    d = StandInSophie(tmp_path / "sophie.sock")
    try:
        srv = make_server(plugins=plugins(f"virus/sophie sophie_socket {d.path}"))
        multipart = message("plain part", f"--b1\r\n\r\n{EICAR}\r\n--b1--",
                            "Content-Type: multipart/mixed; boundary=\"b1\"\r\n")
        r = send_message(srv, ["rcpt@example.test"], multipart)
        assert (r.code, r.enhanced()) == (552, "5.7.1"), r
        assert "Virus found: EICAR-AV-Test" in r.text, r
        r = send_message(srv, ["rcpt@example.test"], with_attachment("fine", "hello"))
        assert r.code == 250, r
        head, _ = header_of(srv.maildir.only())
        assert "\nX-Virus-Checked: Checked by SOPHIE on mx.test\n" in head, head
    finally:
        d.stop()
    # The daemon gone: deferred.
    r = send_message(srv, ["rcpt@example.test"], with_attachment("later", "hello"))
    assert (r.code, r.enhanced()) == (451, "4.7.1"), r


# --- dspam (stand-in program) -----------------------------------------------------------------

def test_dspam_stand_in(make_server, tmp_path):
    dspam = stand_in(tmp_path, "dspam", """
m=$(cat)
case "$m" in *"cheap pills"*) c=Spam; p=1.0000;; *) c=Innocent; p=0.0100;; esac
echo "$2; result=\\"$c\\"; class=\\"$c\\"; probability=$p; confidence=1.00; signature=5a1b2c3d"
""")
    srv = make_server(plugins=plugins(f"dspam dspam_bin {dspam} reject 0.9"))
    r = send_message(srv, ["rcpt@example.test"], message("offer", "cheap pills here"))
    assert (r.code, r.enhanced()) == (552, "5.7.1"), r
    assert "dspam says, no spam please" in r.text, r
    r = send_message(srv, ["rcpt@example.test"], CLEAN)
    assert r.code == 250, r
    head, _ = header_of(srv.maildir.only())
    assert "\nX-DSPAM-Result: Innocent, probability=0.0100, confidence=1.00\n" in head, head
    assert "\nX-DSPAM-Signature: 5a1b2c3d\n" in head, head
