"""The `milter` plugin end to end, against a real milter: OpenDKIM (Debian package opendkim,
opendkim-tools) running as a milter on a private loopback port, speaking protocol v6 with
SMFIP_HDR_LEADSPC and symbol lists.

- Signing: a signer instance (our clients in its InternalHosts) adds a DKIM-Signature header
  through the milter's add-header action; it lands in the Maildir.
- Verifying: the signed message, sent to a server whose milter is a verifier instance, arrives
  with OpenDKIM's Authentication-Results `dkim=pass`; the same message with its body changed is
  refused with OpenDKIM's own reply code (On-BadSignature reject: 550 5.7.x).
- rspamd's proxy worker in milter mode (Debian package rspamd; v6 with every no-reply flag)
  refuses GTUBE with its own reply code, 554 5.7.1, and adds its X-Spam-Status and
  X-Rspamd-Server headers to a clean message (its milter_headers module, loopback included).
- A milter that is down: the default action (tempfail: 450 4.7.1) at connect, and `accept` lets the
  mail through untouched.
- clamav-milter (Debian package clamav-milter) before a private clamd whose database the test
  writes: EICAR is rejected, a clean message gets its X-Virus-Status header.
- spamass-milter (Debian package spamass-milter) before a private spamd: GTUBE gets 550.
- opendmarc (Debian package opendmarc) in a network and mount namespace of its own, where a
  private Knot answers on 127.0.0.1:53 (opendmarc reads /etc/resolv.conf only): a message
  from a p=reject domain that neither SPF nor DKIM supports gets 550.
- Two milters chained, opendkim signing then spamass-milter: both modifications land.
"""

import os
import shutil
import socket
import subprocess

import pytest

from conftest import ROOT, free_port, free_ports, private_dir, wait_for
from test_scanners import EICAR, GTUBE, Daemon, spamd, start_clamd  # noqa: F401 (spamd: a fixture)

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
    return chain_server(make_server, ("dkim", port, *options))


def chain_server(make_server, *milters):
    """A server whose milters are `milters` ((name, port or unix:/path, options...), in
    order), then rcpt_ok and a Maildir."""
    lines = []
    for name, address, *options in milters:
        address = address if isinstance(address, str) else f"inet:{address}@127.0.0.1"
        lines.append(" ".join(["milter", name, address, *options]))
    return make_server(plugins=[*lines, "rcpt_ok", "queue/maildir {maildir}"])


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
    # Its milter headers on every message, the loopback client's included.
    (base / "local" / "local.d").mkdir()
    (base / "local" / "local.d" / "milter_headers.conf").write_text(
        'use = ["x-spam-status", "x-rspamd-server"];\nskip_local = false;\n'
        "skip_authenticated = false;\n"
    )
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

    # A clean message passes with the headers rspamd adds through the milter.
    assert send(srv, message("rspamd lunch")).code == 250
    head = header_section(srv.maildir.wait_count(1)[0])
    assert "\nX-Spam-Status: No, score=" in head, head
    assert "\nX-Rspamd-Server: " in head, head


def need(path, package):
    if not os.access(path, os.X_OK):
        pytest.fail(f"{path} not found: `apt-get install {package}` (tests/run does it)")


def header_section(delivered):
    return delivered.replace(b"\r\n", b"\n").split(b"\n\n")[0].decode("utf-8", "replace")


@pytest.fixture
def clamav_milter():
    """clamav-milter on a free port, scanning through a private clamd (test-written database:
    EICAR); rejects what is infected."""
    binary = "/usr/sbin/clamav-milter"
    need(binary, "clamav-milter")
    base = private_dir("ringsmtpd-clamav-milter-")
    daemons = []
    try:
        daemons.append(start_clamd(base))
        port = free_port()
        conf = base / "clamav-milter.conf"
        conf.write_text(
            f"MilterSocket inet:{port}@127.0.0.1\nClamdSocket unix:{base}/clamd.sock\n"
            f"Foreground yes\nPidFile {base}/clamav-milter.pid\nLogFile {base}/clamav-milter.log\n"
            "OnClean Accept\nOnInfected Reject\nOnFail Defer\nAddHeader Replace\n"
            "LogInfected Basic\nReadTimeout 60\n"
        )
        daemons.append(Daemon("clamav-milter", [binary, "-c", str(conf)], base,
                              lambda: listening(port)))
        yield port
    finally:
        for d in reversed(daemons):
            d.stop()
        shutil.rmtree(base, ignore_errors=True)


def test_clamav_milter_rejects_eicar(make_server, clamav_milter):
    srv = chain_server(make_server, ("clamav", clamav_milter))
    r = send(srv, message("virus", body=f"Hello,\r\n{EICAR}\r\n"))
    # clamav-milter rejects without a reply code: data_post's deny (docs/hooks.md).
    assert r.code == 552 and r.enhanced() == "5.7.1", r
    srv.maildir.assert_empty()

    assert send(srv, message("clean")).code == 250
    head = header_section(srv.maildir.wait_count(1)[0])
    assert "\nX-Virus-Status: Clean" in head, head
    assert "\nX-Virus-Scanned: clamav-milter " in head, head


@pytest.fixture
def spamass_milter(spamd):
    """start_spamass_milter() -> port of a spamass-milter (reject at score 15) on the spamd."""
    binary = "/usr/sbin/spamass-milter"
    need(binary, "spamass-milter")
    base = private_dir("ringsmtpd-spamass-milter-")
    daemons = []

    def start():
        port = free_port()
        daemons.append(Daemon(
            "spamass-milter",
            [binary, "-p", f"inet:{port}@127.0.0.1", "-r", "15", "-P", f"{base}/pid-{port}",
             "--", "-d", "127.0.0.1", "-p", str(spamd.port)],
            base, lambda: listening(port)))
        return port

    try:
        yield start
    finally:
        for d in daemons:
            d.stop()
        shutil.rmtree(base, ignore_errors=True)


def test_spamass_milter_rejects_gtube(make_server, spamass_milter):
    srv = chain_server(make_server, ("spamass", spamass_milter(), "eom_timeout", "60"))
    r = send(srv, message("gtube", body=f"Hello,\r\n{GTUBE}\r\n"))
    assert r.code == 550 and r.enhanced() == "5.7.1", r
    srv.maildir.assert_empty()


def test_two_milters_apply_both_modifications(make_server, start_opendkim, spamass_milter):
    """opendkim signs (the client is internal), then spamass-milter adds its X-Spam fields."""
    srv = chain_server(make_server, ("dkim", start_opendkim("s", "127.0.0.0/8")),
                       ("spamass", spamass_milter(), "eom_timeout", "60"))
    assert send(srv, message("chained lunch")).code == 250
    head = header_section(srv.maildir.wait_count(1)[0])
    assert "\nDKIM-Signature: v=1; a=rsa-sha256;" in head, head
    assert "\nX-Spam-Status: No, score=" in head, head
    assert "\nX-Spam-Checker-Version: SpamAssassin" in head, head


DMARC_ZONE = ROOT / "tests" / "e2e" / "dns_zones" / "dmarc" / "example.org.zone"


@pytest.fixture
def opendmarc_milter():
    """opendmarc on a unix socket, run with a private Knot in a network, mount and PID
    namespace of their own: there Knot listens on 127.0.0.1:53 and a bind-mounted
    /etc/resolv.conf points at it (opendmarc has no resolver setting). The socket is a file,
    so the server reaches it from outside. Killing `unshare` ends the whole namespace."""
    binary = "/usr/sbin/opendmarc"
    need(binary, "opendmarc")
    for tool in ("unshare", "knotd", "kdig"):
        if not shutil.which(tool, path="/usr/sbin:/usr/bin:/sbin:/bin"):
            pytest.fail(f"{tool} not found (tests/run installs knot and knot-dnsutils)")
    base = private_dir("ringsmtpd-opendmarc-")
    for sub in ("zones", "db"):
        (base / sub).mkdir()
    (base / "zones" / "example.org.zone").write_text(DMARC_ZONE.read_text())
    (base / "knot.conf").write_text(
        f"server:\n    listen: 127.0.0.1@53\n    rundir: {base}\n"
        f"database:\n    storage: {base}/db\n"
        f"template:\n  - id: default\n    storage: {base}/zones\n    file: \"%s.zone\"\n"
        "    zonefile-sync: -1\n    journal-content: none\n"
        "zone:\n  - domain: example.org\n"
    )
    (base / "resolv.conf").write_text("nameserver 127.0.0.1\n")
    (base / "ignore-hosts").write_text("")  # none: the loopback client is checked too
    sock = base / "opendmarc.sock"
    conf = base / "opendmarc.conf"
    conf.write_text(
        f"Socket local:{sock}\nBackground false\nSyslog false\nRejectFailures true\n"
        f"IgnoreHosts {base}/ignore-hosts\nAuthservID milter.test\nPidFile {base}/opendmarc.pid\n"
    )
    script = (
        "set -e; ip link set lo up; mount --bind \"$1/resolv.conf\" /etc/resolv.conf; "
        "knotd -c \"$1/knot.conf\" >\"$1/knotd.out\" 2>&1 & "
        "i=0; until kdig +short +time=1 @127.0.0.1 _dmarc.all.example.org TXT | grep -q DMARC1; "
        "do i=$((i+1)); [ $i -lt 100 ] || exit 1; sleep 0.2; done; "
        f"exec {binary} -f -c \"$1/opendmarc.conf\""
    )
    d = Daemon("opendmarc", ["unshare", "--mount", "--net", "--pid", "--fork", "--kill-child",
                             "sh", "-c", script, "sh", str(base)],
               base, lambda: unix_listening(sock))
    try:
        yield f"unix:{sock}"
    finally:
        d.stop()
        shutil.rmtree(base, ignore_errors=True)


def unix_listening(path):
    try:
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(str(path))
        return True
    except OSError:
        return False


def test_opendmarc_rejects_a_failing_p_reject_domain(make_server, opendmarc_milter):
    srv = chain_server(make_server, ("dmarc", opendmarc_milter))
    c = srv.connect()
    try:
        c.ehlo("client.test")
        data = (
            "From: Joe <joe@all.example.org>\r\nTo: Sue <rcpt@example.test>\r\n"
            "Subject: forged\r\nDate: Fri, 04 Dec 2026 10:00:00 +0000\r\n"
            "Message-ID: <forged@all.example.org>\r\n\r\nPay this invoice.\r\n"
        ).encode()
        r = c.transaction("joe@all.example.org", [RCPT], data)
        c.cmd("QUIT", 221)
    finally:
        c.close()
    assert r.code == 550 and r.enhanced() == "5.7.1", r
    assert "dmarc" in " ".join(r.lines).lower(), r
    srv.maildir.assert_empty()
