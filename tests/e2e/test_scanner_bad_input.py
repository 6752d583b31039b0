"""Bad input for the content scanners (issue 12, "Bad input"): a 50 MB message and a message
with 10,000 MIME parts through `spamassassin` (spamd) and `virus/clamdscan` (clamd), and
stand-in scanners that answer slowly, with CR/LF in what they send back. Each case has its
documented outcome, a log line, nothing lost, and no worker blocked: a session on the same
(single) worker is answered while a scan is in flight."""

import shutil
import socket
import threading

import pytest

from conftest import IO_TIMEOUT, private_dir, send_message
from test_scanners import (  # noqa: F401 (clamd, spamd: the fixtures)
    EICAR, clamd, header_of, message, plugins, spamd, start_clamd)

RCPT = "rcpt@example.test"
# Scans of the large messages may take a while on a loaded machine: generous, not timed.
SLOW = {"plugin_timeout": 100}
LONG_IO = 110


def big_body(size, last=""):
    """A text body of about `size` bytes (CRLF lines), ending with `last`."""
    line = "line %08d of a very large message, streamed to the scanners in chunks\r\n"
    n = size // len(line % 0)
    return "".join(line % i for i in range(n)) + last


def send_slowly(srv, msg):
    """One transaction with a long reply timeout; the reply to the final dot."""
    c = srv.connect(timeout=LONG_IO)
    try:
        c.ehlo()
        r = c.transaction("sender@client.test", [RCPT], msg)
        c.cmd("QUIT", 221)
        return r
    finally:
        c.close()


@pytest.fixture(scope="module")
def big_clamd():
    """clamd that takes streams and files up to 60 MB."""
    base = private_dir("ringsmtpd-clamd-big-")
    d = start_clamd(base, "60M", "MaxFileSize 60M\nMaxScanSize 60M\n")
    yield d
    d.stop()
    shutil.rmtree(base, ignore_errors=True)


# --- 50 MB ------------------------------------------------------------------------------------

def test_50_mb_is_skipped_by_both_size_limits_and_delivered_whole(make_server, spamd, clamd):
    srv = make_server(plugins=plugins(
        f"spamassassin spamd_socket 127.0.0.1:{spamd.port}",
        f"virus/clamdscan clamd_port {clamd.port}"))
    msg = message("fifty", big_body(50_000_000))
    assert len(msg) < 52_428_800  # the tests' databytes
    r = send_slowly(srv, msg)
    assert r.code == 250, r
    delivered = srv.maildir.only()
    # Byte for byte (the Maildir has LF line ends).
    assert delivered.endswith(msg.replace(b"\r\n", b"\n")), "the message is delivered whole"
    head, _ = header_of(delivered)
    assert "\nX-Virus-Checked: skipped, over max_size (1024 KiB) on mx.test\n" in head, head
    assert "X-Spam-Status" not in head, head
    srv.wait_log(" bytes > size_limit ")  # spamassassin's skip, too big
    srv.wait_log(" bytes > max_size 1024 KiB)")  # clamdscan's


def test_50_mb_over_clamds_stream_limit_is_deferred(make_server, clamd):
    # max_size above clamd's StreamMaxLength (5M here): clamd cuts the stream off, which is
    # an error, and the error policy defers: nothing is accepted unscanned.
    srv = make_server(plugins=plugins(f"virus/clamdscan clamd_port {clamd.port} max_size 60000"))
    r = send_slowly(srv, message("fifty over", big_body(50_000_000)))
    assert (r.code, r.enhanced()) == (451, "4.7.1"), r
    srv.maildir.assert_empty()
    srv.wait_log("error, deferred (")


def test_50_mb_is_streamed_whole_to_clamd_in_chunks(make_server, big_clamd):
    # EICAR in the last bytes: only a scan of the whole spool file, 64 KiB at a time, finds it.
    srv = make_server(plugins=plugins(
        f"virus/clamdscan clamd_port {big_clamd.port} max_size 60000 timeout 90"),
        settings=SLOW)
    r = send_slowly(srv, message("fifty virus", big_body(50_000_000, EICAR)))
    assert (r.code, r.enhanced()) == (552, "5.7.0"), r
    assert "Eicar-Ndb" in r.text
    srv.maildir.assert_empty()
    srv.wait_log("fail, found virus Eicar-Ndb")


# --- 10,000 MIME parts ------------------------------------------------------------------------

def many_parts(n, last):
    parts = "".join(f"--b\r\nContent-Type: text/plain\r\n\r\npart {i}\r\n" for i in range(n - 1))
    body = f"{parts}--b\r\nContent-Type: text/plain\r\n\r\n{last}\r\n--b--"
    return (f"From: <sender@client.test>\r\nTo: <{RCPT}>\r\nSubject: parts\r\n"
            f"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n"
            f"{body}\r\n").encode()


def test_10000_parts_with_a_virus_in_the_last_are_refused(make_server, clamd):
    srv = make_server(plugins=plugins(f"virus/clamdscan clamd_port {clamd.port} scan_all 0 "
                                      "max_size 4096 timeout 90"), settings=SLOW)
    r = send_slowly(srv, many_parts(10_000, EICAR))
    assert (r.code, r.enhanced()) == (552, "5.7.0"), r
    srv.maildir.assert_empty()
    srv.wait_log("fail, found virus")


def test_10000_parts_are_scored_by_spamd(make_server, spamd):
    srv = make_server(plugins=plugins(f"spamassassin spamd_socket 127.0.0.1:{spamd.port} "
                                      "size_limit 2000000 timeout 90"), settings=SLOW)
    msg = many_parts(10_000, "the last part")
    r = send_slowly(srv, msg)
    assert r.code == 250, r
    delivered = srv.maildir.only()
    assert delivered.endswith(msg.replace(b"\r\n", b"\n"))
    head, _ = header_of(delivered)
    assert "\nX-Spam-Status: " in head, head
    srv.wait_log("pass, ")


# --- slow stand-ins, hostile answers ------------------------------------------------------------

class SlowScanner:
    """A stand-in scanner on a free loopback port: for each connection it reads a request
    with `read`, sets `got`, then holds its answer until `release` is set."""

    def __init__(self, read, answer):
        self.read, self.answer = read, answer
        self.got, self.release = threading.Event(), threading.Event()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self):
        try:
            conn, _ = self.listener.accept()
        except OSError:
            return  # stopped
        with conn:
            conn.settimeout(IO_TIMEOUT)
            self.read(conn)
            self.got.set()
            self.release.wait(IO_TIMEOUT * 3)
            conn.sendall(self.answer)

    def stop(self):
        self.release.set()
        self.listener.close()
        self.thread.join(IO_TIMEOUT)


def read_exactly(conn, n):
    data = b""
    while len(data) < n:
        chunk = conn.recv(n - len(data))
        assert chunk, "the scanner's client closed early"
        data += chunk
    return data


def read_spamc(conn):
    head = b""
    while not head.endswith(b"\r\n\r\n"):
        head += read_exactly(conn, 1)
    length = int(head.split(b"Content-length: ")[1].split(b"\r\n")[0])
    read_exactly(conn, length)


def read_instream(conn):
    assert read_exactly(conn, 10) == b"zINSTREAM\0"
    while True:
        n = int.from_bytes(read_exactly(conn, 4), "big")
        if n == 0:
            return
        read_exactly(conn, n)


def spamd_answer(section):
    return (b"SPAMD/1.1 0 EX_OK\r\nContent-length: %d\r\nSpam: False ; 0.1 / 5.0\r\n\r\n"
            % len(section)) + section


# Each answer tries to add a Bcc field (CR, LF, NUL in a header value or a virus name).
SCANNERS = {
    "spamassassin": ("spamassassin spamd_socket 127.0.0.1:{port}", read_spamc, spamd_answer(
        b"X-Spam-Status: No, score=0.1\r\nX-Spam-Report: a\rBcc: victim@example.test\r\n"
        b"X-Spam-Level: \x00\r\nBcc: victim2@example.test\r\n\r\n")),
    "virus/clamdscan": ("virus/clamdscan clamd_port {port} deny_viruses no", read_instream,
                        b"stream: Evil\r\nBcc: victim@example.test FOUND\0"),
}


@pytest.mark.parametrize("name", sorted(SCANNERS))
def test_a_slow_scanner_blocks_no_other_session_and_injects_nothing(make_server, name):
    line, read, answer = SCANNERS[name]
    scanner = SlowScanner(read, answer)
    try:
        # One worker thread: the NOOP session and the scanned one share it.
        srv = make_server(plugins=plugins(line.format(port=scanner.port)), threads=1)
        result = {}
        sender = threading.Thread(
            target=lambda: result.update(r=send_message(srv, [RCPT], message("slow", "hi"))))
        sender.start()
        assert scanner.got.wait(IO_TIMEOUT), "the scan did not start"
        # The scanner holds its answer: the scan is in flight, yet this session is answered.
        c = srv.connect()
        c.ehlo()
        c.cmd("NOOP", 250)
        c.cmd("NOOP", 250)
        assert "r" not in result and sender.is_alive(), "the scan cannot have finished"
        c.cmd("QUIT", 221)
        c.close()
        scanner.release.set()
        sender.join(IO_TIMEOUT)
        assert result["r"].code == 250, result["r"]
    finally:
        scanner.stop()
    head, _ = header_of(srv.maildir.only())
    lines = head.split("\n")
    assert not [l for l in lines if l.lower().startswith("bcc")], head
    if name == "spamassassin":
        assert "\nX-Spam-Report: a Bcc: victim@example.test\n" in head, head
    else:
        assert "\nX-Virus-Details: Evil??Bcc: victim@example.test\n" in head, head
