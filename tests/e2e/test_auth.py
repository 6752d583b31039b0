"""SMTP AUTH backends end to end, with real clients over STARTTLS: `auth/auth_ldap_bind`
against a real OpenLDAP slapd (Debian packages slapd and ldap-utils) started here with a test
directory; `auth/auth_flat_file` with smtplib's login() (CRAM-MD5 by its preference), PLAIN and
LOGIN; `auth/auth_checkpassword` with a checkpassword script; `auth/auth_imap` against a small
IMAP server on a thread.

What is checked: a right password gives 235 and the client may relay to a domain that is not
ours (the message is delivered, marked ESMTPSA and auth=pass); a wrong one gives 535 and no
relaying; a backend that is down gives 454, never an acceptance."""

import base64
import hmac
import os
import pathlib
import shutil
import signal
import smtplib
import socket
import subprocess
import threading

import pytest

from conftest import IO_TIMEOUT, ME, free_port, make_message, wait_for
from test_tls import client_context, tls_cert

BASE = "dc=example,dc=test"
FAR = "someone@far.example"  # not a local domain: only a relay client may send there


# ---------------------------------------------------------------------------------------------
# slapd


def ldap_tool(name):
    path = shutil.which(name, path="/usr/sbin:/usr/bin:/sbin:/bin")
    if not path:
        pytest.fail(
            f"{name} is not installed: `apt-get install slapd ldap-utils` with debconf "
            "slapd/no_configuration=true (tests/run does it)"
        )
    return path


SLAPD_CONF = """\
include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/inetorgperson.schema
pidfile {dir}/slapd.pid
argsfile {dir}/slapd.args
modulepath /usr/lib/ldap
moduleload back_mdb
database mdb
maxsize 10485760
suffix "{base}"
rootdn "cn=admin,{base}"
rootpw admin-secret
directory {dir}/db
# Anyone may bind with a password; ou=staff is visible only to the search account.
access to attrs=userPassword
    by anonymous auth
    by * none
access to dn.subtree="ou=staff,{base}"
    by dn.exact="cn=search,{base}" read
    by * none
access to * by * read
"""

DIRECTORY = """\
dn: {base}
objectClass: dcObject
objectClass: organization
dc: example
o: Example

dn: ou=people,{base}
objectClass: organizationalUnit
ou: people

dn: uid=joe,ou=people,{base}
objectClass: inetOrgPerson
uid: joe
cn: Joe
sn: Test
mail: joe@example.test
userPassword: right pw

dn: ou=staff,{base}
objectClass: organizationalUnit
ou: staff

dn: uid=ann,ou=staff,{base}
objectClass: inetOrgPerson
uid: ann
cn: Ann
sn: Staff
userPassword: ann pw

dn: cn=search,{base}
objectClass: organizationalRole
objectClass: simpleSecurityObject
cn: search
userPassword: search pw
"""


class Slapd:
    """A private slapd on a free loopback port, its database in `dir`."""

    def __init__(self, dir):
        self.dir = pathlib.Path(dir)
        self.port = free_port()
        self.proc = None
        (self.dir / "db").mkdir(parents=True)
        self.conf = self.dir / "slapd.conf"
        self.conf.write_text(SLAPD_CONF.format(dir=self.dir, base=BASE))
        ldif = self.dir / "directory.ldif"
        ldif.write_text(DIRECTORY.format(base=BASE))
        out = subprocess.run([ldap_tool("slapadd"), "-f", str(self.conf), "-l", str(ldif)],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, f"slapadd failed:\n{out.stdout}{out.stderr}"

    def start(self):
        self.log = open(self.dir / "slapd.log", "ab")
        # -d 0: stay in the foreground (no fork), so the test owns the process.
        self.proc = subprocess.Popen(
            [ldap_tool("slapd"), "-f", str(self.conf), "-h", f"ldap://127.0.0.1:{self.port}/", "-d", "0"],
            stdin=subprocess.DEVNULL, stdout=self.log, stderr=self.log,
        )

        def up():
            if self.proc.poll() is not None:
                pytest.fail(f"slapd exited with {self.proc.returncode}:\n{self.log_text()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return True
            except OSError:
                return False

        wait_for(up, 20, "slapd to listen")
        return self

    def log_text(self):
        return (self.dir / "slapd.log").read_text(errors="replace")

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        if self.proc:
            self.log.close()
            self.proc = None


@pytest.fixture
def slapd(tmp_path):
    server = Slapd(tmp_path / "slapd").start()
    # The directory works as the test expects, seen by a real LDAP client first.
    out = subprocess.run(
        [ldap_tool("ldapwhoami"), "-x", "-H", f"ldap://127.0.0.1:{server.port}/",
         "-D", f"uid=joe,ou=people,{BASE}", "-w", "right pw"],
        capture_output=True, text=True, timeout=30,
    )
    assert out.returncode == 0 and "uid=joe" in out.stdout, out.stdout + out.stderr
    yield server
    server.stop()


# ---------------------------------------------------------------------------------------------
# ringsmtpd with TLS and an auth backend


def auth_server(make_server, backend, settings=None):
    """A server with STARTTLS and `backend` (a config/plugins line)."""
    srv = make_server(start=False, settings=settings,
                      plugins=["tls", backend, "rcpt_ok", "queue/maildir {maildir}"])
    tls_cert(srv.dir / "ssl")
    srv.start()
    return srv


def smtp_tls(srv):
    """smtplib over STARTTLS, the certificate checked against our CA and the name `mx.test`
    (smtplib's starttls() would check 127.0.0.1, so its steps are done here by hand)."""
    s = smtplib.SMTP("127.0.0.1", srv.port, timeout=IO_TIMEOUT)
    s.ehlo("client.test")
    assert not s.has_extn("auth"), "AUTH offered before TLS"
    code, msg = s.docmd("STARTTLS")
    assert code == 220, (code, msg)
    s.sock = client_context(srv).wrap_socket(s.sock, server_hostname=ME)
    s.file = None
    s.helo_resp = s.ehlo_resp = None
    s.esmtp_features = {}
    s.ehlo("client.test")
    return s


def mechanisms(s):
    return set(s.esmtp_features.get("auth", "").upper().split())


def try_auth(s, mechanism, user, password):
    """One AUTH exchange; returns the reply code (235, 454, 535...)."""
    s.user, s.password = user, password
    obj = {"PLAIN": s.auth_plain, "LOGIN": s.auth_login, "CRAM-MD5": s.auth_cram_md5}[mechanism]
    try:
        code, _ = s.auth(mechanism, obj)
    except smtplib.SMTPAuthenticationError as e:
        code = e.smtp_code
    return code


def relay_refused(s):
    s.mail("a@client.test")
    code, msg = s.rcpt(FAR)
    s.rset()
    return code == 550 and b"Relaying denied" in msg


def send_far(srv, s, subject):
    s.sendmail("a@client.test", [FAR], make_message(subject, ["relayed after AUTH"]))
    return srv.maildir.wait_count(1)[0].decode()


# ---------------------------------------------------------------------------------------------
# auth/auth_ldap_bind


def ldap_line(slapd, extra=""):
    return f"auth/auth_ldap_bind ldap_host 127.0.0.1 ldap_port {slapd.port} ldap_base {BASE} {extra}".strip()


def test_ldap_right_password_authenticates_and_relays(make_server, slapd):
    srv = auth_server(make_server, ldap_line(slapd))
    with smtp_tls(srv) as s:
        assert mechanisms(s) == {"PLAIN", "LOGIN"}, "no CRAM-MD5: LDAP holds no clear password"
        assert relay_refused(s), "relaying before AUTH"
        assert try_auth(s, "PLAIN", "joe@example.test", "right pw") == 235
        data = send_far(srv, s, "ldap relay")
    assert "auth=pass (PLAIN) smtp.auth=joe@example.test" in data, data[:800]
    assert " with ESMTPSA " in data, data[:800]
    srv.wait_log("pass: 'joe@example.test' bound as (uid=joe)")


def test_ldap_login_mechanism_and_wrong_passwords(make_server, slapd):
    srv = auth_server(make_server, ldap_line(slapd))
    with smtp_tls(srv) as s:
        assert try_auth(s, "LOGIN", "joe", "wrong pw") == 535
        assert relay_refused(s), "relaying after a failed AUTH"
        assert try_auth(s, "PLAIN", "nobody", "right pw") == 535
        # The empty password: an unauthenticated bind must never count as a login.
        assert try_auth(s, "PLAIN", "joe", "") == 535
        assert try_auth(s, "LOGIN", "joe", "right pw") == 235
    log = srv.log()
    assert "49 (invalidCredentials)" in log, log[-3000:]
    assert "no entry (uid=nobody)" in log
    assert "empty password for 'joe'" in log
    assert "right pw" not in log and "wrong pw" not in log, "a password reached the log"


def test_ldap_search_account_from_the_ldap_file(make_server, slapd):
    # ou=staff is hidden from anonymous searches: without the search account, ann is unknown.
    srv = auth_server(make_server, ldap_line(slapd))
    with smtp_tls(srv) as s:
        assert try_auth(s, "PLAIN", "ann", "ann pw") == 535
    srv.stop()
    srv2 = make_server(start=False, plugins=["tls", "auth/auth_ldap_bind", "rcpt_ok", "queue/maildir {maildir}"])
    ldap_file = srv2.cfg / "ldap"
    ldap_file.write_text(
        f"ldap_host 127.0.0.1\nldap_port {slapd.port}\nldap_base {BASE}\n"
        f"ldap_bind_dn cn=search,{BASE}\nldap_bind_password search pw\n"
    )
    ldap_file.chmod(0o600)
    tls_cert(srv2.dir / "ssl")
    srv2.start()
    with smtp_tls(srv2) as s:
        assert try_auth(s, "PLAIN", "ann", "ann pw") == 235
        assert try_auth(s, "PLAIN", "ann", "nope") == 503, "a second AUTH after success"


def test_ldap_file_readable_by_everyone_is_refused(make_server, slapd):
    srv = make_server(start=False, plugins=["tls", "auth/auth_ldap_bind", "rcpt_ok", "queue/maildir {maildir}"])
    ldap_file = srv.cfg / "ldap"
    ldap_file.write_text(f"ldap_base {BASE}\nldap_bind_dn cn=search,{BASE}\nldap_bind_password search pw\n")
    ldap_file.chmod(0o644)
    tls_cert(srv.dir / "ssl")
    args = srv.args() + ["--check"]
    out = subprocess.run(args, capture_output=True, text=True, timeout=60, cwd=srv.dir)
    assert out.returncode != 0, out.stdout + out.stderr
    assert "readable or writable by every user" in out.stdout + out.stderr


def test_ldap_down_is_a_temporary_failure_never_acceptance(make_server, slapd):
    srv = auth_server(make_server, ldap_line(slapd))
    slapd.stop()
    with smtp_tls(srv) as s:
        assert try_auth(s, "PLAIN", "joe", "right pw") == 454
        assert relay_refused(s), "relaying after a temporary AUTH failure"
        assert try_auth(s, "LOGIN", "joe", "right pw") == 454
    log = srv.log()
    assert "temporary failure for 'joe'" in log and "cannot connect to 127.0.0.1:" in log, log[-3000:]
    srv.maildir.assert_empty()


def test_ldap_that_never_answers_times_out(make_server):
    # A listener that accepts and says nothing: ldap_timeout ends the wait with a 454.
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(8)
    port = lsock.getsockname()[1]
    try:
        srv = auth_server(make_server, f"auth/auth_ldap_bind ldap_port {port} ldap_base {BASE} ldap_timeout 1")
        with smtp_tls(srv) as s:
            assert try_auth(s, "PLAIN", "joe", "right pw") == 454
        srv.wait_log("no answer within ldap_timeout (1s)")
    finally:
        lsock.close()


# ---------------------------------------------------------------------------------------------
# auth/auth_flat_file


def flat_server(make_server):
    srv = make_server(start=False, plugins=["tls", "auth/auth_flat_file", "rcpt_ok", "queue/maildir {maildir}"])
    pw = srv.cfg / "flat_auth_pw"
    pw.write_text("# user@domain:password\ngood@example.com:good_pass\nbad@example.com:bad_pass\n")
    pw.chmod(0o600)
    tls_cert(srv.dir / "ssl")
    srv.start()
    return srv


def test_flat_file_smtplib_login_uses_cram_md5_and_relays(make_server):
    srv = flat_server(make_server)
    with smtp_tls(srv) as s:
        assert mechanisms(s) == {"PLAIN", "LOGIN", "CRAM-MD5"}
        # smtplib prefers CRAM-MD5 when offered.
        code, _ = s.login("good@example.com", "good_pass")
        assert code == 235
        data = send_far(srv, s, "flat relay")
    assert "auth=pass (CRAM-MD5) smtp.auth=good@example.com" in data, data[:800]
    srv.wait_log("pass: 'good@example.com' with CRAM-MD5")


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN", "CRAM-MD5"])
def test_flat_file_each_mechanism(make_server, mechanism):
    srv = flat_server(make_server)
    with smtp_tls(srv) as s:
        assert try_auth(s, mechanism, "good@example.com", "bad_pass") == 535
        assert try_auth(s, mechanism, "good", "good_pass") == 535, "names need the domain"
        assert relay_refused(s)
        assert try_auth(s, mechanism, "GOOD@Example.com", "good_pass") == 235


def test_flat_file_cram_md5_by_hand(make_server):
    # The exchange spelled out (RFC 2195): the digest is HMAC-MD5 of the server's challenge.
    srv = flat_server(make_server)
    with smtp_tls(srv) as s:
        code, challenge = s.docmd("AUTH CRAM-MD5")
        assert code == 334
        challenge = base64.b64decode(challenge)
        assert challenge.startswith(b"<") and challenge.endswith(b"@" + ME.encode() + b">"), challenge
        digest = hmac.new(b"bad_pass", challenge, "md5").hexdigest()
        code, _ = s.docmd(base64.b64encode(f"bad@example.com {digest}".encode()).decode())
        assert code == 235


def test_flat_file_world_readable_is_refused(make_server):
    srv = make_server(start=False, plugins=["auth/auth_flat_file", "rcpt_ok", "queue/maildir {maildir}"])
    pw = srv.cfg / "flat_auth_pw"
    pw.write_text("good@example.com:good_pass\n")
    pw.chmod(0o644)
    out = subprocess.run(srv.args() + ["--check"], capture_output=True, text=True, timeout=60, cwd=srv.dir)
    assert out.returncode != 0, out.stdout + out.stderr
    assert "flat_auth_pw" in out.stdout + out.stderr and "chmod 600" in out.stdout + out.stderr


# ---------------------------------------------------------------------------------------------
# auth/auth_checkpassword and auth/auth_imap


def test_checkpassword_program(make_server, tmp_path):
    checkpw = tmp_path / "checkpw"
    checkpw.write_text(
        "#!/bin/bash\n"
        "IFS= read -r -d '' user <&3; IFS= read -r -d '' pass <&3\n"
        "[ \"$user\" = tempfail ] && exit 111\n"
        "[ \"$user\" = joe ] && [ \"$pass\" = 'right pw' ] && exec \"$@\"\n"
        "exit 1\n"
    )
    checkpw.chmod(0o755)
    srv = auth_server(make_server, f"auth/auth_checkpassword checkpw {checkpw} true /bin/true timeout 5")
    with smtp_tls(srv) as s:
        assert mechanisms(s) == {"PLAIN", "LOGIN"}
        assert try_auth(s, "PLAIN", "joe", "wrong") == 535
        assert try_auth(s, "LOGIN", "tempfail", "x") == 454
        assert try_auth(s, "PLAIN", "joe", "right pw") == 235
        send_far(srv, s, "checkpassword relay")


class FakeImap:
    """An IMAP server on a thread: `joe` / `right pw` may log in."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.lines = []
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self.serve, args=(conn,), daemon=True).start()

    def serve(self, conn):
        with conn:
            f = conn.makefile("rb")
            conn.sendall(b"* OK [CAPABILITY IMAP4rev1] ready\r\n")
            for line in f:
                self.lines.append(line)
                if line.startswith(b"A1 LOGIN"):
                    ok = line == b'A1 LOGIN "joe" "right pw"\r\n'
                    conn.sendall(b"A1 OK logged in\r\n" if ok else b"A1 NO [AUTHENTICATIONFAILED] no\r\n")
                elif line.startswith(b"A2 LOGOUT"):
                    conn.sendall(b"* BYE bye\r\nA2 OK\r\n")
                    return

    def close(self):
        # close() alone would not wake the thread blocked in accept(), which keeps listening.
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()


def test_imap_login(make_server):
    imap = FakeImap()
    try:
        srv = auth_server(make_server, f"auth/auth_imap 127.0.0.1 {imap.port}")
        with smtp_tls(srv) as s:
            assert try_auth(s, "PLAIN", "joe", "wrong") == 535
            assert try_auth(s, "PLAIN", "joe", "right pw") == 235
        assert b'A1 LOGIN "joe" "wrong"\r\n' in imap.lines
    finally:
        imap.close()
    # The IMAP server gone: 454.
    srv2 = auth_server(make_server, f"auth/auth_imap 127.0.0.1 {imap.port}")
    with smtp_tls(srv2) as s:
        assert try_auth(s, "LOGIN", "joe", "right pw") == 454


def test_authdeny_advertises_everything_and_refuses(make_server):
    srv = auth_server(make_server, "auth/authdeny")
    with smtp_tls(srv) as s:
        assert mechanisms(s) == {"PLAIN", "LOGIN", "CRAM-MD5"}
        assert try_auth(s, "PLAIN", "joe", "anything") == 535
        assert relay_refused(s)
    srv.wait_log("cannot authenticate 'joe'")
