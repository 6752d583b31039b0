"""Postfix relaying through ringsmtpd over STARTTLS with full certificate verification
(`smtp_tls_security_level = secure`: Postfix refuses to send unless the chain verifies against
the ringsmtpd CA and the name matches). Reuses the private Postfix of test_postfix.py."""

import os
import shutil
import subprocess
import tempfile

import pytest

from conftest import BINARY, ME, wait_for
from test_postfix import MASTER_CF, Postfix, wait_delivered


@pytest.fixture
def postfix_tls(make_server):
    if not shutil.which("postfix", path="/usr/sbin:/usr/bin") or os.geteuid() != 0:
        pytest.fail("needs Postfix (tests/run installs it) and root")
    server = make_server(start=False, plugins=["tls", "rcpt_ok", "queue/maildir {maildir}"])
    out = subprocess.run([str(BINARY), "tls-cert", "--dir", str(server.dir / "ssl"), "--host", ME],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    server.start()
    base = tempfile.mkdtemp(prefix="ringsmtpd-postfix-tls.", dir="/tmp")
    os.chmod(base, 0o755)
    ca = os.path.join(base, "ca.crt")
    shutil.copy(server.dir / "ssl" / "qpsmtpd-ca.crt", ca)
    os.chmod(ca, 0o644)
    pf = Postfix(base, server.port)
    with open(pf.etc / "main.cf", "a") as f:  # later lines override earlier ones
        f.write(f"smtp_tls_security_level = secure\nsmtp_tls_CAfile = {ca}\n"
                f"smtp_tls_secure_cert_match = {ME}\nsmtp_tls_loglevel = 1\n")
    (pf.etc / "master.cf").write_text(MASTER_CF + "tlsmgr    unix  -       -       n       1000?   1       tlsmgr\n")
    pf.start()
    pf.server = server
    yield pf
    pf.stop()
    shutil.rmtree(base, ignore_errors=True)


def test_postfix_relays_over_verified_tls(postfix_tls):
    msg = b"From: sender@postfix.test\nSubject: over TLS\n\nsecret body\n"
    postfix_tls.sendmail("sender@postfix.test", ["one@example.test"], msg)
    data = wait_delivered(postfix_tls, 1)[0].decode()
    assert " with ESMTPS (TLSv1." in data, data[:800]
    assert "secret body" in data
    # Postfix logs through postlogd, asynchronously.
    wait_for(lambda: "Verified TLS connection established" in postfix_tls.log()
             or "Trusted TLS connection established" in postfix_tls.log(), 30,
             "Postfix's verified TLS log line")
