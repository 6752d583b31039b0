"""ident/p0f end to end: a real p0f 3 watching `lo` (as root) for the server's port, clients
bound to their own 127.0.0.x address so p0f fingerprints each SYN. The fingerprint reaches the
X-P0F header, greylisting's `p0f` option and the `p0f_blocked_operating_systems` refusal; a
client p0f did not see (filtered out) gets no fingerprint and is served as usual.
"""

import os
import shutil
import socket
import subprocess

import pytest

from conftest import IO_TIMEOUT, Client, make_message, wait_for

MAILDIR = "queue/maildir {maildir}"
SENDER = "sender@example.org"
RCPT = "rcpt@example.test"
SEEN = "127.0.0.3"
UNSEEN = "127.0.0.5"  # excluded by p0f's filter: "no match"


class P0f:
    """A private p0f on `lo`, filtered to one port (minus UNSEEN), with its API socket."""

    def __init__(self, base, port):
        self.dir = base
        self.sock = base / "p0f.sock"
        self.log = base / "p0f.log"
        self.out = base / "p0f.out"
        self.port = port
        self.proc = None

    def start(self):
        binary = shutil.which("p0f") or ("/usr/sbin/p0f" if os.path.exists("/usr/sbin/p0f") else None)
        if binary is None:
            pytest.fail("p0f is not installed (tests/run installs it: apt-get install p0f)")
        if os.geteuid() != 0:
            pytest.fail("p0f needs root to capture on lo")
        self.fh = open(self.out, "wb")
        self.proc = subprocess.Popen(
            [binary, "-i", "lo", "-s", str(self.sock), "-o", str(self.log),
             f"tcp port {self.port} and not host {UNSEEN}"],
            stdin=subprocess.DEVNULL, stdout=self.fh, stderr=subprocess.STDOUT,
        )

        def ready():
            if self.proc.poll() is not None:
                pytest.fail(f"p0f exited with {self.proc.returncode}:\n{self.out.read_text(errors='replace')}")
            return self.sock.exists() and b"Entered main event loop" in self.out.read_bytes()

        wait_for(ready, 20, "p0f to start capturing")
        return self

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.fh.close()


@pytest.fixture
def p0f_for(tmp_path):
    """p0f_for(server_port) -> a started P0f; stopped at the end of the test."""
    started = []

    def start(port):
        d = tmp_path / f"p0f{len(started)}"
        d.mkdir()
        p = P0f(d, port)
        started.append(p)
        return p.start()

    yield start
    for p in started:
        p.stop()


def serve(make_server, p0f_for, lines, settings=None):
    """A server on a port fixed before p0f starts (p0f's filter names it), then started with
    `lines` as its plugins ({sock}: p0f's API socket)."""
    server = make_server(settings=settings, start=False)
    server.port = server.port  # no retry on another port: p0f watches this one
    p0f = p0f_for(server.port)
    server.set_plugins([
        line.replace("{sock}", str(p0f.sock)).replace("{maildir}", str(server.maildir.path))
        for line in lines
    ])
    return server.start()


def client_from(source, port):
    """A Client whose socket is bound to `source`, so p0f sees its SYN from that address."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(IO_TIMEOUT)
    s.bind((source, 0))
    s.connect(("127.0.0.1", port))
    c = Client.__new__(Client)
    c.sock, c.buf = s, b""
    return c


def deliver(server, source, subject):
    c = client_from(source, server.port)
    c.expect(220)
    c.ehlo()
    c.transaction(SENDER, [RCPT], make_message(subject, ["hello"]), 250)
    c.cmd("QUIT", 221)
    c.close()


def x_p0f(data):
    head = data.replace(b"\r\n", b"\n").split(b"\n\n", 1)[0].decode()
    values = [line[len("X-P0F:"):].strip() for line in head.split("\n") if line.startswith("X-P0F:")]
    assert len(values) <= 1, head
    return values[0] if values else None


def test_the_fingerprint_reaches_the_header(make_server, p0f_for):
    server = serve(make_server, p0f_for,
                   ["ident/p0f {sock} add_headers 1 smite_os linux", "rcpt_ok", MAILDIR])
    deliver(server, SEEN, "seen")
    (first,) = server.maildir.wait_count(1)
    header = x_p0f(first)
    assert header is not None, "no X-P0F header"
    assert header.startswith("Linux"), header
    assert "distance=0" in header, header
    server.wait_log("Linux 2.2.x-3.x, distance 0, karma -1")
    # p0f never saw this client's SYN: no match, no header, the mail goes through.
    deliver(server, UNSEEN, "unseen")
    assert [x_p0f(m) for m in server.maildir.wait_count(2)].count(None) == 1
    server.wait_log("skip, no match")


def test_greylisting_only_the_matching_os(make_server, p0f_for):
    server = serve(make_server, p0f_for,
                   ["ident/p0f {sock}", "greylisting p0f genre,^linux", "rcpt_ok", MAILDIR])
    c = client_from(SEEN, server.port)
    c.expect(220)
    c.ehlo()
    r = c.cmd(f"MAIL FROM:<{SENDER}>", 451, "4.7.1")
    assert "Greylisted" in r.text
    c.cmd("QUIT", 221)
    # Not fingerprinted: qpsmtpd's rule, `p0f` greylists only clients that match.
    c = client_from(UNSEEN, server.port)
    c.expect(220)
    c.ehlo()
    c.cmd(f"MAIL FROM:<{SENDER}>", 250)
    c.cmd("QUIT", 221)
    server.wait_log("skip: no p0f fingerprint")


def test_a_blocked_os_is_refused_at_connect(make_server, p0f_for):
    server = serve(make_server, p0f_for, ["ident/p0f {sock}", "rcpt_ok", MAILDIR],
                   settings={"p0f_blocked_operating_systems": "# OSes refused here\n^linux"})
    # Refused at once, or at MAIL when p0f had not been handed the SYN yet at connect.
    c = client_from(SEEN, server.port)
    r = c.reply()
    if r.code == 220:
        c.ehlo()
        r = c.cmd(f"MAIL FROM:<{SENDER}>")
    assert (r.code, r.enhanced()) == (550, "5.7.1"), r
    assert "operating system" in r.text
    c.close()
    c = client_from(UNSEEN, server.port)
    c.expect(220)
    c.ehlo()
    c.cmd(f"MAIL FROM:<{SENDER}>", 250)
    c.cmd("QUIT", 221)
