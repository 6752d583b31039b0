"""The `milter` plugin end to end, against a real milter: OpenDKIM (Debian package opendkim,
opendkim-tools) running as a milter on a private loopback port, speaking protocol v6 with
SMFIP_HDR_LEADSPC and symbol lists.

- Signing: a signer instance (our clients in its InternalHosts) adds a DKIM-Signature header
  through the milter's add-header action; it lands in the Maildir.
- Verifying: the signed message, sent to a server whose milter is a verifier instance, arrives
  with OpenDKIM's Authentication-Results `dkim=pass`; the same message with its body changed is
  refused with OpenDKIM's own reply code (On-BadSignature reject: 550 5.7.x).
- A milter that is down: the default action (tempfail: 450 4.7.1) at connect, and `accept` lets the
  mail through untouched.
"""

import pathlib
import shutil
import socket
import subprocess

import pytest

from conftest import free_port, wait_for

DOMAIN = "example.test"
RCPT = "rcpt@example.test"


def opendkim():
    path = shutil.which("opendkim", path="/usr/sbin:/usr/bin:/sbin:/bin")
    genkey = shutil.which("opendkim-genkey", path="/usr/sbin:/usr/bin:/sbin:/bin")
    if not path or not genkey:
        pytest.fail("opendkim is not installed: `apt-get install opendkim opendkim-tools` (tests/run does it)")
    return path, genkey


@pytest.fixture
def keys(tmp_path):
    """A test key for example.test, selector `test`, and the TestPublicKeys file."""
    _, genkey = opendkim()
    d = tmp_path / "keys"
    d.mkdir()
    subprocess.run([genkey, "-b", "1024", "-d", DOMAIN, "-s", "test", "-D", str(d)], check=True, timeout=60)
    record = "".join(part for part in (d / "test.txt").read_text().split('"')[1::2]).replace(" ", "")
    (d / "testkeys").write_text(f"test._domainkey.{DOMAIN} {record}\n")
    return d


@pytest.fixture
def start_opendkim(tmp_path, keys):
    """start_opendkim(mode, internal) -> port of a private opendkim milter; all stopped at the end."""
    binary, _ = opendkim()
    procs = []

    def start(mode, internal):
        port = free_port()
        conf = tmp_path / f"opendkim-{port}.conf"
        conf.write_text(
            f"Mode {mode}\nDomain {DOMAIN}\nSelector test\nKeyFile {keys / 'test.private'}\n"
            f"Socket inet:{port}@127.0.0.1\nBackground no\nSyslog no\nTestPublicKeys {keys / 'testkeys'}\n"
            f"InternalHosts {internal}\nOn-BadSignature reject\nRequireSafeKeys no\n"
            f"PidFile {tmp_path / f'opendkim-{port}.pid'}\nAuthservID milter.test\n"
        )
        log = open(tmp_path / f"opendkim-{port}.log", "wb")
        procs.append((subprocess.Popen([binary, "-f", "-x", str(conf)], stdout=log, stderr=log), log))

        def listening():
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return True
            except OSError:
                return False

        wait_for(listening, 20, f"opendkim on port {port}")
        return port

    yield start
    for proc, log in procs:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        log.close()


def message(subject, body="Hello there,\r\n\r\nlunch at noon?\r\n"):
    return (
        f"From: Joe <joe@{DOMAIN}>\r\nTo: Sue <{RCPT}>\r\nSubject: {subject}\r\n"
        "Date: Fri, 04 Dec 2026 10:00:00 +0000\r\n"
        f"Message-ID: <{subject.replace(' ', '.')}@{DOMAIN}>\r\n\r\n" + body
    ).encode()


def milter_server(make_server, port, *options):
    line = " ".join(["milter", "dkim", f"inet:{port}@127.0.0.1", *options])
    return make_server(plugins=[line, "rcpt_ok", "queue/maildir {maildir}"])


def send(server, data):
    c = server.connect()
    try:
        c.ehlo("client.test")
        reply = c.transaction(f"joe@{DOMAIN}", [RCPT], data)
        c.cmd("QUIT", 221)
        return reply
    finally:
        c.close()


def original(delivered):
    """The message as the client sent it, from a delivered Maildir file: the fields before
    the first one the client wrote (From) are dropped, LF becomes CRLF; the DKIM-Signature
    the milter added sits among the dropped ones and is put back in front."""
    text = delivered.replace(b"\n", b"\r\n")
    start = text.index(b"\r\nFrom: ") + 2
    sig_at = text.index(b"DKIM-Signature:")
    sig_end = sig_at
    while True:
        sig_end = text.index(b"\r\n", sig_end) + 2
        if text[sig_end : sig_end + 1] not in (b" ", b"\t"):
            break
    return text[sig_at:sig_end] + text[start:]


def test_opendkim_signs_and_verifies_through_the_milter(make_server, start_opendkim):
    signer = milter_server(make_server, start_opendkim("s", "127.0.0.0/8"))
    r = send(signer, message("signed lunch"))
    assert r.code == 250, r
    signed = signer.maildir.wait_count(1)[0]
    assert b"DKIM-Signature: v=1; a=rsa-sha256;" in signed, signed[:1500]
    assert b"d=example.test" in signed and b"s=test" in signed
    assert b"lunch at noon?" in signed

    verifier = milter_server(make_server, start_opendkim("v", "192.0.2.0/24"), "eom_timeout 20")
    data = original(signed)
    r = send(verifier, data)
    assert r.code == 250, r
    verified = verifier.maildir.wait_count(1)[0]
    ar = [l for l in verified.split(b"\n") if b"milter.test" in l]
    assert ar and ar[0].startswith(b"Authentication-Results: milter.test;"), verified[:1500]
    assert b"dkim=pass" in verified.split(b"\n\n")[0], verified[:1500]

    # The body changed after signing: OpenDKIM refuses it, with its own reply code.
    tampered = data.replace(b"lunch at noon?", b"lunch at one?")
    r = send(verifier, tampered)
    assert r.code == 550 and r.enhanced().startswith("5.7."), r
    assert len(verifier.maildir.messages()) == 1


def test_a_down_milter_gets_the_default_action(make_server):
    port = free_port()  # nobody listens there
    srv = milter_server(make_server, port)
    c = srv.connect(banner=False)
    try:
        r = c.reply()
        # The engine's reply to a temporary deny at connect (docs/hooks.md).
        assert r.code == 450 and r.enhanced() == "4.7.1", r
    finally:
        c.close()
    assert "milter dkim: cannot connect" in srv.log()

    srv = milter_server(make_server, port, "default_action", "accept")
    data = message("no milter")
    assert send(srv, data).code == 250
    delivered = srv.maildir.wait_count(1)[0]
    assert delivered.endswith(data.replace(b"\r\n", b"\n"))
    assert b"DKIM-Signature" not in delivered
