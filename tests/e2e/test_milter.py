"""The `milter` plugin end to end, against a real milter: OpenDKIM (Debian package opendkim,
opendkim-tools) running as a milter on a private loopback port, speaking protocol v6 with
SMFIP_HDR_LEADSPC and symbol lists.

- Signing: a signer instance (our clients in its InternalHosts) adds a DKIM-Signature header
  through the milter's add-header action; it lands in the Maildir.
- Verifying: the signed message, sent to a server whose milter is a verifier instance, arrives
  with OpenDKIM's Authentication-Results `dkim=pass`; the same message with its body changed is
  refused with OpenDKIM's own reply code (On-BadSignature reject: 550 5.7.x).
- rspamd's proxy worker in milter mode (Debian package rspamd; v6 with every no-reply flag)
  refuses GTUBE with its own reply code, 554 5.7.1.
- A milter that is down: the default action (tempfail: 450 4.7.1) at connect, and `accept` lets the
  mail through untouched.
"""

import shutil
import socket
import subprocess

import pytest

from conftest import free_port, free_ports, private_dir, wait_for

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


def listening(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


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

        wait_for(lambda: listening(port), 20, f"opendkim on port {port}")
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


GTUBE = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"


@pytest.fixture
def rspamd_milter():
    """rspamd's proxy worker in milter mode (it speaks v6 only and sets every SMFIP_NR_*
    no-reply flag), private config, its DNS pointed at a dead port; the port of the proxy."""
    binary = shutil.which("rspamd")
    if not binary:
        pytest.fail("rspamd is not installed: `apt-get install rspamd` (tests/run does it)")
    base = private_dir("rspamd-milter")
    normal, controller, proxy, dead = free_ports(4)
    for sub in ("db", "run", "log", "local"):
        (base / sub).mkdir()
        shutil.chown(base / sub, "_rspamd", "_rspamd")
    (base / "rspamd.conf").write_text(
        '.include "$CONFDIR/common.conf"\n'
        'options { pidfile="$RUNDIR/rspamd.pid"; .include "$CONFDIR/options.inc"\n'
        f'  dns {{ nameserver=["127.0.0.1:{dead}"]; timeout=1s; retransmits=1; }} }}\n'
        'logging { type="console"; level="info"; }\n'
        f'worker "normal" {{ bind_socket="127.0.0.1:{normal}"; .include "$CONFDIR/worker-normal.inc"; count=1; }}\n'
        f'worker "controller" {{ bind_socket="127.0.0.1:{controller}"; .include "$CONFDIR/worker-controller.inc"; count=1; }}\n'
        f'worker "rspamd_proxy" {{ bind_socket="127.0.0.1:{proxy}"; milter=yes; timeout=120s;\n'
        '  upstream "local" { default=yes; self_scan=yes; } count=1; }\n'
    )
    log = open(base / "rspamd.out", "wb")
    proc = subprocess.Popen(
        [binary, "-f", "-u", "_rspamd", "-g", "_rspamd", "-c", str(base / "rspamd.conf"),
         "--var", f"DBDIR={base / 'db'}", "--var", f"RUNDIR={base / 'run'}",
         "--var", f"LOGDIR={base / 'log'}", "--var", f"LOCAL_CONFDIR={base / 'local'}"],
        stdout=log, stderr=log, cwd=base,
    )
    try:
        wait_for(lambda: listening(proxy) or proc.poll() is not None, 90, "rspamd's milter proxy")
        assert proc.poll() is None, (base / "rspamd.out").read_text()[-3000:]
        yield proxy
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        log.close()
        shutil.rmtree(base, ignore_errors=True)


def test_rspamd_rejects_gtube_through_the_milter(make_server, rspamd_milter):
    srv = milter_server(make_server, rspamd_milter, "eom_timeout", "60")
    r = send(srv, message("gtube", body=f"Hello,\r\n{GTUBE}\r\n"))
    # rspamd's own reply (SMFIR_REPLYCODE), code and text as it sent them.
    assert r.code == 554 and r.enhanced() == "5.7.1", r
    assert "gtube" in " ".join(r.lines).lower(), r
    srv.maildir.assert_empty()
