"""TLS end to end: STARTTLS (RFC 3207) and implicit TLS (RFC 8314) with real clients
(Python's ssl/smtplib, openssl s_client, swaks), certificates made by `ringsmtpd tls-cert`,
chain and SNI checked from the client side, and the STARTTLS injection attack class
(CVE-2011-0411): plaintext pipelined after STARTTLS is never executed."""

import smtplib
import socket
import ssl
import subprocess

import pytest

from conftest import BINARY, IO_TIMEOUT, ME, free_port, make_message


def tls_cert(dir, host=ME):
    out = subprocess.run(
        [str(BINARY), "tls-cert", "--dir", str(dir), "--host", host, "--days", "2"],
        capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 0, out.stderr
    for name in ["qpsmtpd-ca.crt", "qpsmtpd-ca.key", "qpsmtpd-server.crt", "qpsmtpd-server.key"]:
        assert (dir / name).exists(), name
    assert (dir / "qpsmtpd-server.key").stat().st_mode & 0o077 == 0, "private key readable by others"


def tls_server(make_server, tmp_path, extra_args=(), settings=None, start=True):
    """A server with `tls` configured; certificates in <srv>/ssl (the plugin's defaults)."""
    srv = make_server(start=False, extra_args=extra_args, settings=settings,
                      plugins=["tls", "rcpt_ok", "queue/maildir {maildir}"])
    tls_cert(srv.dir / "ssl")
    if start:
        srv.start()
    return srv


def client_context(srv):
    ctx = ssl.create_default_context(cafile=str(srv.dir / "ssl" / "qpsmtpd-ca.crt"))
    ctx.check_hostname = True
    return ctx


def test_starttls_with_smtplib_verifies_the_chain_and_delivers(make_server, tmp_path):
    srv = tls_server(make_server, tmp_path)
    with smtplib.SMTP("127.0.0.1", srv.port, timeout=IO_TIMEOUT) as s:
        s.ehlo("client.test")
        assert s.has_extn("starttls")
        # smtplib's starttls() checks the name it connected to (127.0.0.1); do its steps by
        # hand with the certificate's name instead.
        code, msg = s.docmd("STARTTLS")
        assert code == 220 and msg.startswith(b"2.0.0"), (code, msg)
        s.sock = client_context(srv).wrap_socket(s.sock, server_hostname=ME)
        s.file = None
        s.helo_resp = s.ehlo_resp = None
        s.esmtp_features = {}
        s.ehlo("client.test")
        assert not s.has_extn("starttls"), "STARTTLS must not be offered twice"
        cipher = s.sock.cipher()
        s.sendmail("a@example.org", ["user@example.test"], make_message("tls", ["over TLS"]))
    data = srv.maildir.wait_count(1)[0].decode()
    # Received: ... with ESMTPS (TLSv1.3 TLS13_AES_256_GCM_SHA384 encrypted); <date>
    name, version, _bits = cipher
    assert f" with ESMTPS ({version} " in data, (cipher, data[:600])
    assert name.removeprefix("TLS_").replace("-", "_") in data, (cipher, data[:600])


def test_plaintext_pipelined_after_starttls_is_never_executed(make_server, tmp_path):
    srv = tls_server(make_server, tmp_path)
    c = srv.connect()
    c.ehlo()
    # The attack: STARTTLS and a command in one plaintext packet (CVE-2011-0411 class).
    c.send("STARTTLS\r\nMAIL FROM:<evil@example.org>\r\n")
    c.expect(220, "2.0.0")
    tls = client_context(srv).wrap_socket(c.sock, server_hostname=ME)
    tls.settimeout(IO_TIMEOUT)
    # Had the injected MAIL run, this would be "503 nested MAIL"; instead the session is fresh:
    # no HELO yet (RFC 3207 §4.2), so MAIL is "please say hello first".
    tls.sendall(b"MAIL FROM:<a@example.org>\r\n")
    reply = tls.recv(4096).decode()
    assert reply.startswith("503 5.5.1 please say hello first"), reply
    tls.sendall(b"EHLO client.test\r\n")
    ehlo = b""
    while not ehlo.endswith(b"\r\n") or b"250 " not in ehlo:
        ehlo += tls.recv(4096)
    assert b"STARTTLS" not in ehlo
    tls.close()
    srv.wait_log("dropped 30 bytes pipelined after STARTTLS")


def test_starttls_twice_and_with_arguments(make_server, tmp_path):
    srv = tls_server(make_server, tmp_path)
    c = srv.connect()
    c.ehlo()
    c.cmd("STARTTLS now", 501)
    c.cmd("STARTTLS", 220, "2.0.0")
    tls = client_context(srv).wrap_socket(c.sock, server_hostname=ME)
    tls.settimeout(IO_TIMEOUT)
    tls.sendall(b"EHLO x\r\n")
    data = b""
    while b"250 " not in data:
        data += tls.recv(4096)
    tls.sendall(b"STARTTLS\r\n")
    assert tls.recv(4096).startswith(b"503 5.5.1")
    tls.close()


def test_starttls_without_tls_configured_is_an_unknown_command(server):
    c = server.connect()
    r = c.ehlo()
    assert "STARTTLS" not in r.lines
    c.cmd("STARTTLS", 500, "5.5.1")


def test_implicit_tls_listener(make_server, tmp_path):
    port = free_port()
    srv = tls_server(make_server, tmp_path, extra_args=["--listen", f"127.0.0.1:{port} tls"])
    ctx = client_context(srv)
    raw = socket.create_connection(("127.0.0.1", port), timeout=IO_TIMEOUT)
    tls = ctx.wrap_socket(raw, server_hostname=ME)
    banner = tls.recv(4096)
    assert banner.startswith(b"220 "), banner
    tls.sendall(b"EHLO c\r\n")
    data = b""
    while b"250 " not in data:
        data += tls.recv(4096)
    assert b"STARTTLS" not in data, "no STARTTLS inside implicit TLS"
    tls.close()


def test_openssl_s_client_verifies_starttls(make_server, tmp_path):
    srv = tls_server(make_server, tmp_path)
    out = subprocess.run(
        ["openssl", "s_client", "-starttls", "smtp", "-connect", f"127.0.0.1:{srv.port}",
         "-servername", ME, "-verify_hostname", ME,
         "-CAfile", str(srv.dir / "ssl" / "qpsmtpd-ca.crt"), "-verify_return_error", "-brief"],
        input="QUIT\r\n", capture_output=True, text=True, timeout=60,
    )
    text = out.stdout + out.stderr
    assert "Verification: OK" in text or "Verify return code: 0" in text, text
    assert f"Peer certificate: CN = {ME}" in text or f"CN={ME}" in text.replace(" ", ""), text


def test_sni_selects_the_certificate(make_server, tmp_path):
    srv = tls_server(make_server, tmp_path, start=False)
    other = srv.dir / "ssl-other"
    tls_cert(other, host="other.test")
    srv.set("tls_sni", f"other.test {other}/qpsmtpd-server.crt {other}/qpsmtpd-server.key")
    srv.start()
    for name, cadir in [("other.test", other), (ME, srv.dir / "ssl")]:
        c = srv.connect()
        c.ehlo()
        c.cmd("STARTTLS", 220)
        ctx = ssl.create_default_context(cafile=str(cadir / "qpsmtpd-ca.crt"))
        tls = ctx.wrap_socket(c.sock, server_hostname=name)  # verifies chain and name
        cert = tls.getpeercert()
        assert dict(x[0] for x in cert["subject"])["commonName"] == name
        tls.close()


def test_certificates_reload_on_sighup(make_server, tmp_path):
    srv = tls_server(make_server, tmp_path)
    held = srv.connect()  # a connection open across the reload keeps working
    held.ehlo()

    def fingerprint():
        c = srv.connect()
        c.ehlo()
        c.cmd("STARTTLS", 220)
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        tls = ctx.wrap_socket(c.sock, server_hostname=ME)
        der = tls.getpeercert(binary_form=True)
        tls.close()
        return der

    before = fingerprint()
    tls_cert(srv.dir / "ssl")  # new keys and certificates in place
    srv.signal(__import__("signal").SIGHUP)
    srv.wait_log("config reloaded")
    assert fingerprint() != before
    held.cmd("NOOP", 250)


def test_swaks_starttls(make_server, tmp_path):
    srv = tls_server(make_server, tmp_path)
    out = subprocess.run(
        ["swaks", "--server", f"127.0.0.1:{srv.port}", "--to", "user@example.test",
         "--from", "a@example.org", "--tls", "--tls-verify", "--tls-ca-path",
         str(srv.dir / "ssl" / "qpsmtpd-ca.crt"), "--tls-sni", ME, "--timeout", "20"],
        capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "ESMTPS" in srv.maildir.wait_count(1)[0].decode()


def test_a_listener_marked_tls_needs_the_tls_line(make_server, tmp_path):
    srv = make_server(start=False)
    srv.set("listen", f"127.0.0.1:{srv.port} tls")
    out = subprocess.run([str(BINARY), "--config", str(srv.cfg), "--check"],
                         capture_output=True, text=True, timeout=60, cwd=srv.dir)
    assert out.returncode == 1
    assert "marked tls" in out.stderr, out.stderr


def test_a_handshake_that_never_completes_times_out_and_frees_the_connection(make_server, tmp_path):
    # The handshake is bounded by min(30 s, timeout); timeout 2 keeps the test short.
    port = free_port()
    srv = tls_server(make_server, tmp_path, settings={"timeout": "2"},
                     extra_args=["--listen", f"127.0.0.1:{port} tls"])
    # After STARTTLS, and on the implicit TLS listener: a client that never sends a ClientHello.
    c = srv.connect()
    c.ehlo()
    c.cmd("STARTTLS", 220)
    assert c.read_until_closed(deadline=IO_TIMEOUT) == b""
    raw = socket.create_connection(("127.0.0.1", port), timeout=IO_TIMEOUT)
    raw.settimeout(IO_TIMEOUT)
    assert raw.recv(100) == b"", "the server closes a silent implicit-TLS client"
    raw.close()
    srv.wait_log("TLS handshake with 127.0.0.1", count=1)
    srv.wait_log("TlsFailed(TimedOut)")
