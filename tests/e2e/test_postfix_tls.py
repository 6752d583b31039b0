"""Postfix relaying through ringsmtpd over STARTTLS with full certificate verification
(`smtp_tls_security_level = secure`: Postfix refuses to send unless the chain verifies against
the ringsmtpd CA and the name matches). Reuses the private Postfix of test_postfix.py."""

import os
import shutil
import subprocess

import pytest

from conftest import BINARY, ME, wait_for
from test_postfix import RELAY_CLIENT_SERVICES, relay_client_main_cf, wait_delivered


@pytest.fixture
def postfix_tls(make_server, make_postfix):
    """A private Postfix relaying to a fresh ringsmtpd (its `.server`) over verified TLS."""
    server = make_server(start=False, plugins=["tls", "rcpt_ok", "queue/maildir {maildir}"])
    out = subprocess.run([str(BINARY), "tls-cert", "--dir", str(server.dir / "ssl"), "--host", ME],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    server.start()
    main = relay_client_main_cf(server.port)
    main.update({
        "smtp_tls_security_level": "secure",
        "smtp_tls_CAfile": "{base}/ca.crt",
        "smtp_tls_secure_cert_match": ME,
        "smtp_tls_loglevel": "1",
    })
    pf = make_postfix("ringsmtpd-postfix-tls.", "postfix.test", start=False, main=main,
                      services=RELAY_CLIENT_SERVICES + ("tlsmgr",))
    ca = pf.base / "ca.crt"
    shutil.copy(server.dir / "ssl" / "qpsmtpd-ca.crt", ca)
    os.chmod(ca, 0o644)
    pf.start()
    pf.server = server
    return pf


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
