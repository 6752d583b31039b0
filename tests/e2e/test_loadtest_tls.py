"""smtp-loadtest --starttls and --auth-plain against real servers on free loopback ports:
ringsmtpd with the `tls` plugin and auth/auth_flat_file (STARTTLS, the certificate checked
against its test CA, then AUTH PLAIN), and Postfix's smtpd with STARTTLS on a certificate of
the same kind (no AUTH there: Postfix needs a SASL server for it).

The generator's JSON report must count a TLS session and an authentication for every session,
and every message it counts as accepted must be in the server's Maildir.

Needs the release build of the workspace (target/release/smtp-loadtest) and, for the Postfix
part, the Debian package `postfix` and root (as test_forward.py)."""

import json
import subprocess

import pytest

from conftest import BINARY, ME
from test_tls import tls_cert

LOADTEST = BINARY.parent / "smtp-loadtest"
USER, PASSWORD = "good@example.com", "good_pass"
MESSAGES = 40


def loadtest(port, *args):
    """Runs smtp-loadtest on 127.0.0.1:port; returns (exit status, JSON report or None, stderr)."""
    if not LOADTEST.exists():
        pytest.fail(f"{LOADTEST} is missing: cargo build --release --workspace")
    out = subprocess.run(
        [str(LOADTEST), "--target", f"127.0.0.1:{port}", "--messages", str(MESSAGES),
         "--connections", "4", "--threads", "1", "--per-session", "2", "--timeout", "20",
         "--max-failures", "2", "--json", "--quiet", *args],
        capture_output=True, text=True, timeout=120,
    )
    report = json.loads(out.stdout) if out.stdout.strip() else None
    return out.returncode, report, out.stderr


def assert_all_over_tls(report, auth):
    m, c = report["messages"], report["connections"]
    assert (m["attempted"], m["accepted"], m["balanced"]) == (MESSAGES, MESSAGES, True), report["errors"]
    assert c["errors"] == 0, report["errors"]
    sessions = c["sessions"]
    assert sessions >= MESSAGES // 2
    assert c["tls_sessions"] == sessions
    assert sum(c["tls_kinds"].values()) == sessions
    assert all(k.startswith("TLSv1.") for k in c["tls_kinds"]), c["tls_kinds"]
    assert report["phases"]["tls"]["count"] == sessions
    assert c["authenticated"] == (sessions if auth else 0)
    assert report["phases"]["auth"]["count"] == (sessions if auth else 0)


def auth_server(make_server):
    srv = make_server(start=False, plugins=["tls", "auth/auth_flat_file", "rcpt_ok", "queue/maildir {maildir}"])
    pw = srv.cfg / "flat_auth_pw"
    pw.write_text(f"{USER}:{PASSWORD}\n")
    pw.chmod(0o600)
    tls_cert(srv.dir / "ssl")
    srv.start()
    return srv


def test_starttls_and_auth_plain_against_ringsmtpd(make_server, tmp_path):
    srv = auth_server(make_server)
    secret = tmp_path / "auth"
    secret.write_text(f"{USER}:{PASSWORD}\n")
    code, report, err = loadtest(srv.port, "--starttls", "--tls-verify", str(srv.dir / "ssl" / "qpsmtpd-ca.crt"),
                                 "--tls-name", ME, "--auth-plain-file", str(secret), "--to", "example.test")
    assert code == 0, err
    assert report["settings"]["starttls"] and report["settings"]["auth_plain"]
    assert_all_over_tls(report, auth=True)
    msgs = srv.maildir.wait_count(MESSAGES)
    assert len(msgs) == MESSAGES
    # Received says the session was encrypted and authenticated (RFC 3848: ESMTPSA).
    assert all(b"with ESMTPSA" in m for m in msgs), msgs[0][:600]

    # The certificate does not name another host: every handshake fails, counted by stage.
    code, report, err = loadtest(srv.port, "--starttls", "--tls-verify", str(srv.dir / "ssl" / "qpsmtpd-ca.crt"),
                                 "--tls-name", "other.test", "--auth-plain", f"{USER}:{PASSWORD}")
    assert code == 1, err
    c = report["connections"]
    assert (report["messages"]["attempted"], c["sessions"], c["tls_sessions"]) == (0, 0, 0)
    assert c["failed"] == 8
    assert [(e["stage"], e["count"]) for e in report["errors"]] == [("starttls", 8)], report["errors"]
    assert report["errors"][0]["kind"].startswith("handshake: ")

    # A wrong password: 535 (then 454 once the server locks the IP out after repeated
    # failures), a connection error at the auth stage, after a good handshake.
    code, report, err = loadtest(srv.port, "--starttls", "--auth-plain", f"{USER}:wrong")
    assert code == 1, err
    c = report["connections"]
    assert (c["tls_sessions"], c["authenticated"], c["failed"]) == (8, 0, 8)
    kinds = {(e["stage"], e["kind"]): e["count"] for e in report["errors"]}
    assert set(kinds) <= {("auth", "refused with 535"), ("auth", "refused with 454")}, kinds
    assert kinds[("auth", "refused with 535")] >= 1 and sum(kinds.values()) == 8, kinds
    assert len(srv.maildir.messages()) == MESSAGES


def test_starttls_against_postfix_smtpd(make_postfix):
    from test_forward import DOWNSTREAM_MAIN_CF, DOWNSTREAM_SERVICES
    from conftest import free_port

    pf = make_postfix(
        "ringsmtpd-pfloadtls.", "downstream.test",
        main=dict(DOWNSTREAM_MAIN_CF, smtpd_tls_security_level="may"),
        services=DOWNSTREAM_SERVICES, listen_port=free_port(), virtual_domain="example.test",
        tls_cert=True,
    )
    code, report, err = loadtest(pf.port, "--starttls", "--tls-verify", str(pf.ssl / "qpsmtpd-ca.crt"),
                                 "--tls-name", "downstream.test", "--to", "example.test")
    assert code == 0, err
    assert_all_over_tls(report, auth=False)
    files = pf.wait_files(MESSAGES)
    assert len(files) == MESSAGES
    # Postfix's Received clause (smtpd_tls_received_header) says the message came over TLS.
    assert all(b"(using TLS" in f for f in files), files[0][:800]
