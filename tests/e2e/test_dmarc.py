"""The dmarc plugin end to end, with Mail::DMARC (Debian's libmail-dmarc-perl) as the oracle.

The release binary runs `sender_permitted_from reject 0`, `dkim reject 0` and `dmarc` against
a real Knot DNS server (tests/dns/server.py) serving the zones of tests/e2e/dns_zones/dmarc/
plus a DKIM key made for this run; messages are signed with dkimpy. Clients come in through
the PROXY listener, so the server sees 192.0.2.30 (allowed by the domains' SPF) or 192.0.2.31
(not allowed).

For each case Mail::DMARC::PurePerl gets the same inputs (client IP, MAIL FROM domain, From
domain, the SPF and DKIM results) and asks the same Knot server for the policy; ringsmtpd's
`dmarc=` result and disposition (from its Authentication-Results header, or its 550 and log
line when it refused) must equal the oracle's, and the case's expectation.
"""

import importlib.util
import json
import pathlib
import re
import subprocess
import textwrap

import pytest

from conftest import ROOT, Client

_spec = importlib.util.spec_from_file_location("dns_test_server", ROOT / "tests" / "dns" / "server.py")
dns_server = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(dns_server)

ZONES = pathlib.Path(__file__).resolve().parent / "dns_zones" / "dmarc"
RCPT = "rcpt@example.test"
ALLOWED = "192.0.2.30"  # in the SPF records of example.com, bounce.example.com, example.net, example.org
OTHER = "192.0.2.31"
SELECTOR = "sel"
PLUGINS = [
    "sender_permitted_from reject 0",
    "dkim reject 0",
    "dmarc report_dir {reports}",
    "rcpt_ok",
    "queue/maildir {maildir}",
]

# Mail::DMARC::PurePerl fed one case (JSON on stdin), asking the test's Knot server.
ORACLE = textwrap.dedent(
    r"""
    use strict; use warnings;
    use JSON::PP; use Mail::DMARC::PurePerl; use Net::DNS::Resolver;
    my $in = decode_json(do { local $/; <STDIN> });
    my $dmarc = Mail::DMARC::PurePerl->new;
    $dmarc->set_resolver(Net::DNS::Resolver->new(
        nameservers => ['127.0.0.1'], port => $in->{port}, recurse => 0,
        dnsrch => 0, defnames => 0, udp_timeout => 5, tcp_timeout => 5, retry => 2));
    $dmarc->source_ip($in->{ip});
    $dmarc->envelope_from($in->{envelope_from});
    $dmarc->header_from($in->{header_from});
    $dmarc->spf($in->{spf});
    $dmarc->dkim($in->{dkim});
    my $r = $dmarc->validate;
    print encode_json({ result => $r->result, disposition => $r->disposition });
    """
)


def require(cmd, hint):
    if subprocess.run(cmd, capture_output=True).returncode != 0:
        pytest.fail(f"missing: {hint}")


@pytest.fixture(scope="module")
def dkim_key(tmp_path_factory):
    """A 2048-bit RSA key (PKCS#1 PEM, what dkimpy reads) and its DNS record's p= value."""
    require(["python3", "-c", "import dkim"], "dkimpy: python3 -m pip install dkimpy")
    d = tmp_path_factory.mktemp("dkim")
    key = d / "key.pem"
    subprocess.run(["openssl", "genrsa", "-traditional", "-out", str(key), "2048"], check=True,
                   capture_output=True, timeout=60)
    der = subprocess.run(["openssl", "rsa", "-in", str(key), "-pubout", "-outform", "DER"],
                         check=True, capture_output=True, timeout=60).stdout
    import base64

    return key.read_bytes(), base64.b64encode(der).decode()


@pytest.fixture(scope="module")
def knot(dkim_key):
    """Knot with the DMARC zones; example.com and example.net also publish the DKIM key."""
    _, p = dkim_key
    chunks = " ".join(f'"{p[i:i + 200]}"' for i in range(0, len(p), 200))
    record = f'{SELECTOR}._domainkey TXT "v=DKIM1; k=rsa; p=" {chunks}\n'
    zones = {}
    for path in sorted(ZONES.glob("*.zone")):
        origin = path.name[: -len(".zone")]
        text = path.read_text()
        if origin in ("example.com", "example.net"):
            text += record
        zones[origin] = text
    k = dns_server.start_knot(zones=zones)
    try:
        yield k
    finally:
        k.stop()


def start(make_server, knot, tmp_path):
    """A server with PLUGINS on the test's Knot, writing report data to its own directory."""
    reports = tmp_path / "reports"
    reports.mkdir()
    plugins = [line.replace("{reports}", str(reports)) for line in PLUGINS]
    server = make_server(plugins=plugins, settings={"dns_servers": f"127.0.0.1:{knot.port}"}, proxy=True)
    return server, reports


def send(server, ip, mail_from, msg):
    """One transaction from `ip` (a PROXY header); returns the reply to the final dot."""
    c = Client(server.proxy_port)
    c.send(f"PROXY TCP4 {ip} 127.0.0.1 40000 25\r\n")
    c.expect(220)
    c.ehlo("client.example.net")
    reply = c.transaction(mail_from, [RCPT], msg)
    c.cmd("QUIT", 221)
    c.close()
    return reply


def message(subject, header_from, sign_domain, key):
    msg = (
        f"From: Joe Sender <{header_from}>\r\n"
        f"To: {RCPT}\r\n"
        f"Subject: {subject}\r\n"
        f"Message-ID: <{subject}@test>\r\n"
        "\r\n"
        "Hello, this is a DMARC test.\r\n"
    ).encode()
    if sign_domain:
        import dkim

        sig = dkim.sign(msg, SELECTOR.encode(), sign_domain.encode(), key,
                        include_headers=[b"from", b"to", b"subject", b"message-id"])
        msg = sig + msg
    return msg


def oracle(port, ip, mail_from, header_from, spf, sign_domain):
    require(["perl", "-MMail::DMARC::PurePerl", "-e", "1"],
            "Mail::DMARC: apt-get install libmail-dmarc-perl")
    case = {
        "port": port,
        "ip": ip,
        "envelope_from": mail_from.split("@")[1],
        "header_from": header_from.split("@")[1],
        "spf": [{"domain": mail_from.split("@")[1], "scope": "mfrom", "result": spf}],
        "dkim": [{"domain": sign_domain, "selector": SELECTOR, "result": "pass"}] if sign_domain else [],
    }
    out = subprocess.run(["perl", "-e", ORACLE], input=json.dumps(case), capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout)
    return r["result"], r["disposition"]


def header_fields(data):
    """The delivered file's header fields, unfolded: [(name, value)]."""
    head = data.split(b"\n\n", 1)[0].decode()
    fields = []
    for line in head.split("\n"):
        if line[:1] in (" ", "\t") and fields:
            fields[-1] = (fields[-1][0], fields[-1][1] + " " + line.strip())
        else:
            name, _, value = line.partition(": ")
            fields.append((name, value))
    return fields


AR_DMARC = re.compile(r"dmarc=(\w+) \(p=\w+(?: sp=\w+)? dis=(\w+)\) header\.from=([\w.-]+)")


# (id, client, MAIL FROM, From, DKIM signing domain, SPF result, expected (result, disposition))
CASES = [
    ("aligned", ALLOWED, "a@example.com", "a@example.com", "example.com", "pass", ("pass", "none")),
    ("spf-only", ALLOWED, "x@bounce.example.com", "a@example.com", None, "pass", ("pass", "none")),
    ("dkim-only", OTHER, "x@example.net", "a@example.com", "example.com", "fail", ("pass", "none")),
    ("both-fail-reject", OTHER, "a@example.com", "a@example.com", None, "fail", ("fail", "reject")),
    ("unaligned-dkim", OTHER, "a@example.com", "a@example.com", "example.net", "fail", ("fail", "reject")),
    ("quarantine", OTHER, "a@example.net", "a@example.net", None, "fail", ("fail", "quarantine")),
    ("subdomain-sp", OTHER, "a@sub.example.com", "a@sub.example.com", None, "none", ("fail", "quarantine")),
    ("pct-0", OTHER, "a@example.org", "a@example.org", None, "fail", ("fail", "quarantine")),
    ("pct-100", OTHER, "a@all.example.org", "a@all.example.org", None, "none", ("fail", "reject")),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_dmarc_agrees_with_mail_dmarc(make_server, knot, dkim_key, tmp_path, case):
    name, ip, mail_from, header_from, sign_domain, spf, expected = case
    key, _ = dkim_key
    server, reports = start(make_server, knot, tmp_path)
    reply = send(server, ip, mail_from, message(name, header_from, sign_domain, key))
    domain = header_from.split("@")[1]

    if expected[1] == "reject":
        assert (reply.code, reply.enhanced(), reply.text) == (550, "5.7.1", "5.7.1 failed DMARC policy"), reply
        server.wait_log(f"fail, p=reject dis=reject, header.from={domain}")
        server.maildir.assert_empty()
        ours = ("fail", "reject")
    else:
        assert reply.code == 250, reply
        [data] = server.maildir.wait_count(1)
        fields = header_fields(data)
        [ar] = [v for n, v in fields if n == "Authentication-Results"]
        m = AR_DMARC.search(ar)
        assert m, ar
        assert m.group(3) == domain
        ours = (m.group(1), m.group(2))
        # The inputs the oracle gets are what SPF and DKIM found here.
        assert f"spf={spf} smtp.mailfrom={mail_from.split('@')[1]}" in ar, ar
        if sign_domain:
            assert f"dkim=pass header.d={sign_domain}" in ar, ar
        quarantined = [v for n, v in fields if n == "X-DMARC-Quarantine"]
        assert quarantined == ([f"yes (header.from={domain})"] if ours[1] == "quarantine" else []), fields

    assert ours == expected
    assert oracle(knot.port, ip, mail_from, header_from, spf, sign_domain) == ours

    # One report line, with the disposition applied.
    [report] = list(reports.iterdir())
    [row] = report.read_text().splitlines()
    fields = row.split("\t")
    assert (fields[1], fields[2], fields[8]) == (ip, domain, ours[1]), row


def test_servfail_is_temperror_and_delivered(make_server, knot, tmp_path):
    """A policy lookup answered with SERVFAIL (Knot's broken.test) is a temperror: the message
    is delivered and says so, never refused."""
    server, reports = start(make_server, knot, tmp_path)
    reply = send(server, OTHER, "a@broken.test", message("servfail", "a@broken.test", None, None))
    assert reply.code == 250, reply
    [data] = server.maildir.wait_count(1)
    [ar] = [v for n, v in header_fields(data) if n == "Authentication-Results"]
    assert "dmarc=temperror (policy lookup failed) header.from=broken.test" in ar, ar
    assert list(reports.iterdir()) == []


def test_silent_dns_is_temperror_within_the_timeout(make_server, tmp_path):
    """A DNS server that never answers: after `timeout` the policy is a temperror and the
    message is delivered, even though example.com publishes p=reject."""
    silent = dns_server.start_silent()
    try:
        server = make_server(
            plugins=["dmarc timeout 2", "rcpt_ok", "queue/maildir {maildir}"],
            settings={"dns_servers": f"127.0.0.1:{silent.port}", "dns_timeout": 10, "dns_retries": 2},
            proxy=True,
        )
        reply = send(server, OTHER, "a@example.com", message("silent", "a@example.com", None, None))
        assert reply.code == 250, reply
        [data] = server.maildir.wait_count(1)
        [ar] = [v for n, v in header_fields(data) if n == "Authentication-Results"]
        assert "dmarc=temperror (policy lookup timed out) header.from=example.com" in ar, ar
        assert silent.received >= 1, "the policy lookup never reached the (silent) DNS server"
    finally:
        silent.stop()
