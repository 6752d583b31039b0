"""The `dkim` plugin end to end, against two real DKIM implementations as oracles:

- OpenDKIM (Debian packages opendkim, opendkim-tools): `opendkim -t` runs the filter's own
  signing and verifying code on a message file (Mode s signs as for an internal client, Mode v
  verifies, keys from `TestPublicKeys`), and prints the header fields it would add.
- dkimpy (PyPI dkimpy, with PyNaCl for Ed25519): `dkim.sign` and `dkim.verify`, its key
  lookups answered by the knot server below.

Both directions, RSA and Ed25519: mail OpenDKIM or dkimpy signed (with the test keys of
plugins/src/dkim/testdata/, published in tests/e2e/dns_zones/dkim.e2e.test.zone, which knot
serves to ringsmtpd) is delivered with `dkim=pass` in its Authentication-Results, and refused
with 552 5.7.20 once its body or a signed header field is changed; mail ringsmtpd signed for a
relay client or an authenticated client, with keys `ringsmtpd dkim-keygen` made, verifies in
OpenDKIM and dkimpy against the record the command printed, and fails once changed.
"""

import base64
import importlib.util
import os
import pathlib
import re
import shutil
import smtplib
import subprocess

import pytest

from conftest import BINARY, IO_TIMEOUT, ROOT, Client, split_delivered

_spec = importlib.util.spec_from_file_location("dns_test_server", ROOT / "tests" / "dns" / "server.py")
dns_server = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(dns_server)

ZONE = pathlib.Path(__file__).resolve().parent / "dns_zones" / "dkim.e2e.test.zone"
TESTDATA = ROOT / "plugins" / "src" / "dkim" / "testdata"
# The zone's keys: selector -> (private key file, a=).
ORACLE_KEYS = {"rsa": ("rsa2048.pem", "rsa-sha256"), "ed": ("ed25519.pem", "ed25519-sha256")}
# The keys ringsmtpd signs with: domain -> dkim-keygen arguments.
OUR_KEYS = {"r.dkim.e2e.test": ["--bits", "2048"], "e.dkim.e2e.test": ["--ed25519"]}
RCPT = "rcpt@example.test"


def opendkim():
    path = shutil.which("opendkim", path="/usr/sbin:/usr/bin:/sbin:/bin")
    if not path:
        pytest.fail("opendkim is not installed: `apt-get install opendkim opendkim-tools` (tests/run does it)")
    return path


def message(frm, subject, body="Hello  there,\r\n\r\nlunch at noon?\r\n"):
    return (
        f"From: Joe <{frm}>\r\nTo: Sue <{RCPT}>\r\nSubject: {subject}\r\n"
        "Date: Fri, 04 Dec 2026 10:00:00 +0000\r\n"
        f"Message-ID: <{subject.replace(' ', '.')}@dkim.e2e.test>\r\n"
        "MIME-Version: 1.0\r\nContent-Type: text/plain\r\n\r\n" + body
    ).encode()


def crlf(data):
    return data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


# ---------------------------------------------------------------------------------------------
# Keys and DNS


@pytest.fixture(scope="module")
def our_keys(tmp_path_factory):
    """`ringsmtpd dkim-keygen` for each domain of OUR_KEYS into a config dir of its own:
    (that dir, {domain: (selector, record as printed)})."""
    cfg = tmp_path_factory.mktemp("keygen")
    out = {}
    for domain, args in OUR_KEYS.items():
        r = subprocess.run([str(BINARY), "dkim-keygen", domain, "gen", "--config", str(cfg)] + args,
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        assert f"wrote {cfg}/dkim/{domain}/private" in r.stdout, r.stdout
        assert oct((cfg / "dkim" / domain / "private").stat().st_mode & 0o777) == "0o600"
        line = r.stdout[r.stdout.index(f"gen._domainkey.{domain}. IN TXT ("):]
        strings = re.findall(r'"([^"]*)"', line)
        assert all(len(s) <= 255 for s in strings), strings
        out[domain] = ("gen", "".join(strings), line.strip())
    # A second run refuses to replace the key.
    r = subprocess.run([str(BINARY), "dkim-keygen", "e.dkim.e2e.test", "gen", "--ed25519", "--config", str(cfg)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "--force" in r.stderr, r.stderr
    return cfg, out


@pytest.fixture(scope="module")
def knot(our_keys):
    """knot serving dkim.e2e.test: the zone file, plus the records dkim-keygen printed."""
    _, keys = our_keys
    zone = ZONE.read_text() + "".join(line + "\n" for _, _, line in keys.values())
    k = dns_server.start_knot(zones={"dkim.e2e.test": zone}, only=True)
    try:
        yield k
    finally:
        k.stop()


def knot_txt(port):
    """A dkimpy dnsfunc asking knot."""
    import dns.resolver

    res = dns.resolver.Resolver(configure=False)
    res.nameservers = ["127.0.0.1"]
    res.port = port

    def txt(name, timeout=5):
        name = name.decode() if isinstance(name, bytes) else name
        try:
            answer = res.resolve(name.rstrip("."), "TXT", lifetime=timeout)
        except Exception:
            return None
        return b"".join(answer[0].strings)

    return txt


def oracle_key(selector, tmp_path):
    """The test key of `selector`, copied with mode 0600 (git does not keep modes)."""
    src = TESTDATA / ORACLE_KEYS[selector][0]
    dst = tmp_path / src.name
    dst.write_bytes(src.read_bytes())
    dst.chmod(0o600)
    return dst


# ---------------------------------------------------------------------------------------------
# The oracles


def opendkim_run(conf, tmp_path, data):
    """`opendkim -t` on `data` with config lines `conf`: the header fields it would insert."""
    (tmp_path / "opendkim.conf").write_text("Syslog no\nRequireSafeKeys no\n" + conf)
    msg = tmp_path / "message.eml"
    msg.write_bytes(data.replace(b"\r\n", b"\n"))
    r = subprocess.run([opendkim(), "-x", str(tmp_path / "opendkim.conf"), "-vvv", "-t", str(msg)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    return dict(re.findall(r"### INSHEADER: idx=\d+ hname='([^']+)' hvalue='(.*?)'\n", r.stdout + r.stderr, re.S))


def opendkim_sign(selector, domain, tmp_path, data):
    key = oracle_key(selector, tmp_path)
    conf = (f"Mode s\nDomain {domain}\nSelector {selector}\nKeyFile {key}\n"
            f"SignatureAlgorithm {ORACLE_KEYS[selector][1]}\nCanonicalization relaxed/relaxed\n")
    fields = opendkim_run(conf, tmp_path, data)
    sig = fields["DKIM-Signature"]
    assert f"a={ORACLE_KEYS[selector][1]};" in sig and f"d={domain};" in sig, sig
    return crlf(f"DKIM-Signature: {sig}\n".encode()) + data


def opendkim_verify(tmp_path, data, keys):
    """OpenDKIM's dkim= result for `data`; `keys`: (name, record) pairs it may look up."""
    (tmp_path / "testkeys").write_text("".join(f"{n} {r.replace(' ', '')}\n" for n, r in keys))
    fields = opendkim_run(f"Mode v\nTestPublicKeys {tmp_path / 'testkeys'}\n", tmp_path, data)
    ar = fields["Authentication-Results"]
    return re.search(r"dkim=(\w+)", ar).group(1), ar


def dkimpy_sign(selector, domain, data):
    import dkim

    pem = (TESTDATA / ORACLE_KEYS[selector][0]).read_bytes()
    if selector == "ed":
        # dkimpy takes an Ed25519 key as its base64 seed: the last 32 bytes of the PKCS#8 DER.
        der = base64.b64decode(b"".join(l for l in pem.splitlines() if not l.startswith(b"-----")))
        pem = base64.b64encode(der[-32:])
    sig = dkim.sign(data, selector.encode(), domain.encode(), pem,
                    canonicalize=(b"relaxed", b"relaxed"),
                    signature_algorithm=ORACLE_KEYS[selector][1].encode())
    return sig + data


def dkimpy_verify(data, port):
    import dkim

    return dkim.verify(crlf(data), dnsfunc=knot_txt(port))


SIGNERS = {
    "opendkim": lambda selector, tmp_path, data: opendkim_sign(selector, "dkim.e2e.test", tmp_path, data),
    "dkimpy": lambda selector, tmp_path, data: dkimpy_sign(selector, "dkim.e2e.test", data),
}


# ---------------------------------------------------------------------------------------------
# ringsmtpd verifies what OpenDKIM and dkimpy signed


def verifier(make_server, knot):
    return make_server(plugins=["dkim", "rcpt_ok", "queue/maildir {maildir}"],
                       settings={"dns_servers": f"127.0.0.1:{knot.port}"})


def send(server, data, code, enhanced=None, sender="joe@dkim.e2e.test"):
    c = Client(server.port)
    c.expect(220)
    c.ehlo()
    r = c.transaction(sender, [RCPT], data, code, enhanced=enhanced)
    c.cmd("QUIT", 221)
    return r


def delivered_dkim(server, subject):
    [data] = [m for m in server.maildir.wait_count(1) if f"Subject: {subject}\n".encode() in m]
    fields, _ = split_delivered(data)
    ar = dict(fields)["Authentication-Results"].replace("\n\t", " ")
    return re.findall(r"dkim=[^;]*", ar)


@pytest.mark.parametrize("selector", ["rsa", "ed"])
@pytest.mark.parametrize("signer", ["opendkim", "dkimpy"])
def test_oracle_signed_mail_passes_and_tampering_fails(make_server, knot, tmp_path, signer, selector):
    server = verifier(make_server, knot)
    subject = f"{signer} {selector}"
    signed = SIGNERS[signer](selector, tmp_path, message("joe@dkim.e2e.test", subject))
    assert signed.startswith(b"DKIM-Signature: ")
    send(server, signed, 250)
    clauses = delivered_dkim(server, subject)
    assert len(clauses) == 1 and clauses[0].startswith("dkim=pass header.d=dkim.e2e.test "), clauses
    # A changed body and a changed signed field: dkim=fail, refused (reject 1, the default).
    for old, new in [(b"lunch at noon", b"lunch at one"), (b"Subject: " + subject.encode(), b"Subject: urgent")]:
        tampered = signed.replace(old, new, 1)
        assert tampered != signed
        r = send(server, tampered, 552, enhanced="5.7.20")
        assert "DKIM signature invalid" in r.text, r
    assert len(server.maildir.messages()) == 1
    assert "fail, d=dkim.e2e.test s=" + selector in server.log()


def test_unusable_key_record_is_permerror_not_refused(make_server, knot, tmp_path):
    server = verifier(make_server, knot)
    signed = dkimpy_sign("rsa", "dkim.e2e.test", message("joe@dkim.e2e.test", "bad key"))
    signed = signed.replace(b"s=rsa;", b"s=bad;", 1)
    send(server, signed, 250)
    clauses = delivered_dkim(server, "bad key")
    assert len(clauses) == 1 and clauses[0].startswith("dkim=permerror "), clauses


# ---------------------------------------------------------------------------------------------
# OpenDKIM and dkimpy verify what ringsmtpd signed


def signer_server(make_server, our_keys, plugins_before=(), settings=None, secrets=None):
    """A server with the keys of `our_keys` in config/dkim/; `secrets`: files written mode 0600."""
    server = make_server(start=False, settings=settings,
                         plugins=list(plugins_before) + ["dkim", "rcpt_ok", "queue/maildir {maildir}"])
    shutil.copytree(our_keys[0] / "dkim", server.cfg / "dkim", symlinks=True)
    for name, text in (secrets or {}).items():
        (server.cfg / name).write_text(text)
        (server.cfg / name).chmod(0o600)
    server.start()
    return server


def signed_by_us(server, subject):
    [data] = [m for m in server.maildir.wait_count(1) if f"Subject: {subject}\n".encode() in m]
    fields, rest = split_delivered(data)
    assert rest.startswith(b"DKIM-Signature: "), rest[:200]
    # What a receiving MTA would see: the trace fields and the message, CRLF.
    return crlf(data)


def check_both_oracles(data, domain, our_keys, knot, tmp_path, want):
    selector, record, _ = our_keys[1][domain]
    odk, ar = opendkim_verify(tmp_path, data, [(f"{selector}._domainkey.{domain}", record)])
    assert odk == want, ar
    assert dkimpy_verify(data, knot.port) is (want == "pass")


@pytest.mark.parametrize("domain", list(OUR_KEYS), ids=["rsa", "ed25519"])
def test_relay_client_mail_is_signed_and_verifies(make_server, knot, our_keys, tmp_path, domain):
    server = signer_server(make_server, our_keys, ["relay"], settings={"relayclients": "127.0.0.1"})
    subject = f"signed {domain}"
    send(server, message(f"joe@{domain}", subject), 250, sender=f"joe@{domain}")
    data = signed_by_us(server, subject)
    assert f"d={domain};".encode() in data and b"s=gen;" in data
    sig = re.sub(rb"\r\n[ \t]+", b" ", data[data.index(b"DKIM-Signature: "):]).split(b"\r\n", 1)[0]
    h = re.search(rb" h=([^;]*);", sig).group(1).replace(b" ", b"")
    assert h == b"from:from:subject:date:message-id:to:mime-version:content-type", sig
    check_both_oracles(data, domain, our_keys, knot, tmp_path, "pass")
    check_both_oracles(data.replace(b"lunch at noon", b"lunch at one"), domain, our_keys, knot, tmp_path, "fail")
    check_both_oracles(data.replace(b"Subject: signed", b"Subject: Signed"), domain, our_keys, knot, tmp_path, "fail")
    # Mail that was signed is not verified: no dkim= clause of its own.
    [delivered] = server.maildir.messages()
    assert b"dkim=" not in delivered.split(b"\n\n", 1)[0]


def test_authenticated_client_mail_is_signed(make_server, knot, our_keys, tmp_path):
    domain = "r.dkim.e2e.test"
    server = signer_server(make_server, our_keys, ["auth/auth_flat_file"], settings={"tls_before_auth": "0"},
                           secrets={"flat_auth_pw": f"joe@{domain}:right pw\n"})
    s = smtplib.SMTP("127.0.0.1", server.port, local_hostname="client.test", timeout=IO_TIMEOUT)
    s.login(f"joe@{domain}", "right pw")
    assert s.sendmail(f"joe@{domain}", [RCPT], message(f"joe@{domain}", "by auth")) == {}
    s.quit()
    data = signed_by_us(server, "by auth")
    check_both_oracles(data, domain, our_keys, knot, tmp_path, "pass")


def test_unsigned_domain_and_key_errors(make_server, our_keys, tmp_path):
    # A relay client whose domain has no key: delivered unsigned, one log line.
    server = signer_server(make_server, our_keys, ["relay"], settings={"relayclients": "127.0.0.1"})
    send(server, message("joe@elsewhere.test", "no key"), 250, sender="joe@elsewhere.test")
    [data] = server.maildir.wait_count(1)
    assert b"DKIM-Signature" not in data
    assert "skip, no key for elsewhere.test" in server.log()
    # A key others can read is a config error naming the file.
    bad = make_server(start=False, plugins=["dkim", "rcpt_ok", "queue/maildir {maildir}"])
    shutil.copytree(our_keys[0] / "dkim", bad.cfg / "dkim")
    private = bad.cfg / "dkim" / "r.dkim.e2e.test" / "private"
    private.chmod(0o644)
    r = bad.check_config()
    assert r.returncode != 0 and str(private) in r.stdout + r.stderr, r.stdout + r.stderr
    assert "chmod 600" in r.stdout + r.stderr


def test_spooled_message_is_signed(make_server, knot, our_keys, tmp_path):
    """A message over size_threshold (1 MiB here) is spooled; its body is hashed from the
    spool file in chunks, and the signature verifies."""
    domain = "e.dkim.e2e.test"
    server = signer_server(make_server, our_keys, ["relay"], settings={"relayclients": "127.0.0.1"})
    body = "".join(f"line {i:07d} of a long message,  with  blanks \t\r\n" for i in range(50000))
    msg = message(f"joe@{domain}", "spooled", body=body)
    assert len(msg) > 2 * 1048576
    send(server, msg, 250, sender=f"joe@{domain}")
    data = signed_by_us(server, "spooled")
    check_both_oracles(data, domain, our_keys, knot, tmp_path, "pass")
    check_both_oracles(data.replace(b"line 0049999", b"line 0049998"), domain, our_keys, knot, tmp_path, "fail")


def test_opendkim_genkey_key_signs(make_server, knot, tmp_path):
    """A key as opendkim-genkey writes it (1024 bits: signed by the `rsa` crate, not ring),
    dropped into config/dkim/DOMAIN/ with its selector, signs mail both oracles pass."""
    domain = "o.dkim.e2e.test"
    genkey = shutil.which("opendkim-genkey", path="/usr/sbin:/usr/bin")
    assert genkey, "opendkim-genkey is not installed: `apt-get install opendkim-tools` (tests/run does it)"
    keydir = tmp_path / "keys" / "dkim" / domain
    keydir.mkdir(parents=True)
    subprocess.run([genkey, "-b", "1024", "-d", domain, "-s", "og", "-D", str(keydir)], check=True, timeout=60)
    (keydir / "og.private").rename(keydir / "private")
    (keydir / "selector").write_text("og\n")
    record = "".join(re.findall(r'"([^"]*)"', (keydir / "og.txt").read_text()))
    keys = (tmp_path / "keys", {domain: ("og", record, "")})
    server = signer_server(make_server, keys, ["relay"], settings={"relayclients": "127.0.0.1"})
    send(server, message(f"joe@{domain}", "genkey"), 250, sender=f"joe@{domain}")
    data = signed_by_us(server, "genkey")
    assert b"a=rsa-sha256;" in data
    selector, record, _ = keys[1][domain]
    odk, ar = opendkim_verify(tmp_path, data, [(f"og._domainkey.{domain}", record)])
    assert odk == "pass" and "1024-bit key" in ar, ar
    import dkim

    assert dkim.verify(crlf(data), dnsfunc=lambda name, timeout=5: record.encode())
    assert not dkim.verify(crlf(data).replace(b"lunch at noon", b"lunch at one"),
                           dnsfunc=lambda name, timeout=5: record.encode())
