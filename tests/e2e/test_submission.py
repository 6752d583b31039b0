"""The documented submission setup (examples/submission): the shipped example directory
validates, and a server built from it refuses mail before AUTH (530 5.7.0), offers AUTH only
after STARTTLS, and relays for an authenticated client (ESMTPSA)."""

import base64
import os
import pathlib
import shutil
import ssl
import subprocess

from conftest import BINARY, IO_TIMEOUT, ME, server_env, stay_root

EXAMPLE = pathlib.Path(__file__).resolve().parents[2] / "examples" / "submission"


def prepare(dir):
    """The example as a user installs it: certificates and a 0600 password file."""
    cfg = dir / "config"
    shutil.copytree(EXAMPLE, cfg)
    out = subprocess.run([str(BINARY), "tls-cert", "--dir", str(dir / "ssl"), "--host", ME],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    pw = cfg / "flat_auth_pw"
    shutil.copy(cfg / "flat_auth_pw.example", pw)
    os.chmod(pw, 0o600)
    return cfg


def test_the_shipped_example_validates(tmp_path):
    cfg = prepare(tmp_path)
    out = subprocess.run([str(BINARY), "--config", str(cfg), "--check"], cwd=tmp_path,
                         env=server_env(tmp_path), capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "mail                   require_auth" in out.stdout, out.stdout
    assert "auth/auth_flat_file" in out.stdout
    # A world-readable password file is refused, with its name.
    os.chmod(cfg / "flat_auth_pw", 0o644)
    out = subprocess.run([str(BINARY), "--config", str(cfg), "--check"], cwd=tmp_path,
                         env=server_env(tmp_path), capture_output=True, text=True, timeout=60)
    assert out.returncode == 1 and "flat_auth_pw" in out.stderr, out.stderr


def test_submission_requires_auth_over_tls(make_server):
    srv = make_server(start=False)
    example_plugins = [l for l in (EXAMPLE / "plugins").read_text().splitlines()
                       if l.strip() and not l.startswith("#")]
    plugins = [l if not l.startswith("queue/") else "queue/maildir {maildir}" for l in example_plugins]
    prepare_dir = srv.dir
    shutil.rmtree(srv.cfg)
    prepare(prepare_dir)
    srv.set_plugins([p.replace("{maildir}", str(srv.maildir.path)) for p in plugins])
    srv.set("listen", f"127.0.0.1:{srv.port}")
    srv.set("me", ME)
    srv.set("spool_dir", str(srv.spool))
    stay_root(srv.cfg)
    srv.start()

    c = srv.connect()
    r = c.ehlo()
    assert "STARTTLS" in r.lines and not any(l.startswith("AUTH") for l in r.lines), r
    c.cmd("MAIL FROM:<alice@example.test>", 530, "5.7.0")
    c.cmd("STARTTLS", 220)
    ctx = ssl.create_default_context(cafile=str(srv.dir / "ssl" / "qpsmtpd-ca.crt"))
    tls = ctx.wrap_socket(c.sock, server_hostname=ME)
    tls.settimeout(IO_TIMEOUT)

    def cmd(line):
        tls.sendall(line.encode() + b"\r\n")
        data = b""
        while not data.endswith(b"\r\n") or data.split(b"\r\n")[-2][3:4] != b" ":
            chunk = tls.recv(65536)
            assert chunk, f"closed after {line!r}: {data!r}"
            data += chunk
        return data.decode()

    assert "AUTH PLAIN LOGIN CRAM-MD5" in cmd("EHLO client.test")
    assert cmd("MAIL FROM:<alice@example.test>").startswith("530 5.7.0")
    bad = base64.b64encode(b"\0alice@example.test\0wrong").decode()
    assert cmd(f"AUTH PLAIN {bad}").startswith("535 5.7.8")
    good = base64.b64encode(b"\0alice@example.test\0change-me").decode()
    assert cmd(f"AUTH PLAIN {good}").startswith("235 2.7.0")
    assert cmd("MAIL FROM:<alice@example.test>").startswith("250 ")
    assert cmd("RCPT TO:<bob@far-away.example>").startswith("250 "), "authenticated: may relay"
    assert cmd("DATA").startswith("354")
    assert cmd("From: alice@example.test\r\nSubject: sub\r\n\r\nhello\r\n.").startswith("250 ")
    cmd("QUIT")
    data = srv.maildir.wait_count(1)[0].decode()
    assert " with ESMTPSA (TLSv1." in data and "smtp.auth=alice@example.test" in data, data[:800]
