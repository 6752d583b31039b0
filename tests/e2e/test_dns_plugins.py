"""The DNS plugins end to end: the release binary against a real Knot DNS server
(tests/dns/server.py) with the shipped test zones (tests/dns/zones/) plus the zones of
tests/e2e/dns_zones/. Clients come in through the server's PROXY-protocol listener, so the
server sees a "listed" address such as 192.0.2.2.

Deadlines only bound a hang; the one timing claim ("the banner is not delayed") compares a
generous bound with a DNS timeout several times larger.
"""

import asyncio
import base64
import importlib.util
import pathlib
import socket
import time

import pytest

from conftest import IO_TIMEOUT, ROOT, Client, dot_stuff, make_message, split_delivered

_spec = importlib.util.spec_from_file_location("dns_test_server", ROOT / "tests" / "dns" / "server.py")
dns_server = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(dns_server)

E2E_ZONES = pathlib.Path(__file__).resolve().parent / "dns_zones"
SENDER = "sender@example.test"
RCPT = "rcpt@example.test"
LISTED = "192.0.2.2"  # bl.e2e.test: A 127.0.0.2 and a TXT
LISTED_NO_TXT = "192.0.2.3"  # bl.e2e.test: A 127.0.0.2 only
UNLISTED = "192.0.2.99"
LISTED_TXT = "192.0.2.2 is listed in bl.e2e.test, see http://bl.e2e.test/?192.0.2.2"
MAILDIR = "queue/maildir {maildir}"


def e2e_zones():
    return {p.name[: -len(".zone")]: p.read_text() for p in sorted(E2E_ZONES.glob("*.zone"))}


@pytest.fixture(scope="module")
def knot():
    k = dns_server.start_knot(zones=e2e_zones())
    try:
        yield k
    finally:
        k.stop()


def dns_settings(port, **more):
    s = {"dns_servers": f"127.0.0.1:{port}"}
    s.update(more)
    return s


def proxy_header(src, dst="127.0.0.1", sport=40000, dport=25):
    return f"PROXY TCP4 {src} {dst} {sport} {dport}\r\n".encode()


def proxied(server, src, banner=True, timeout=IO_TIMEOUT):
    """A Client on the PROXY listener whose connection the server sees as coming from `src`."""
    c = Client(server.proxy_port, timeout=timeout)
    c.send(proxy_header(src))
    if banner:
        c.expect(220)
    return c


def deliver(c, subject, sender=SENDER, rcpt=RCPT):
    msg = make_message(subject, ["hello"])
    c.ehlo()
    c.transaction(sender, [rcpt], msg, 250)
    c.cmd("QUIT", 221)
    return msg


# ---------------------------------------------------------------------------------------------
# dnsbl


@pytest.mark.parametrize(
    "zone_line,client,text",
    [
        ("bl.e2e.test", LISTED, LISTED_TXT),  # no message of its own: the TXT is the reply
        ("bl.e2e.test:Go away, %IP% is listed", LISTED_NO_TXT, "Go away, 192.0.2.3 is listed"),
    ],
    ids=["txt", "zone-message"],
)
def test_dnsbl_listed_client_refused_at_rcpt(make_server, knot, zone_line, client, text):
    server = make_server(
        plugins=["dnsbl", "rcpt_ok", MAILDIR],
        settings=dns_settings(knot.port, dnsbl_zones=zone_line),
        proxy=True,
    )
    c = proxied(server, client)
    c.ehlo()
    c.cmd(f"MAIL FROM:<{SENDER}>", 250)
    r = c.cmd(f"RCPT TO:<{RCPT}>", 550, enhanced="5.7.1")
    assert r.text == f"5.7.1 {text}", r
    # RFC 5321 §4.5.1: postmaster stays reachable for a blocked client.
    c.cmd("RCPT TO:<postmaster@example.test>", 250)
    c.cmd("DATA", 354)
    c.send(dot_stuff(make_message("to postmaster", ["please delist me"])))
    c.expect(250)
    c.cmd("QUIT", 221)
    [msg] = server.maildir.wait_count(1)
    assert b"Delivered-To: postmaster@example.test\n" in msg
    assert b"Delivered-To: rcpt@example.test\n" not in msg


def test_dnsbl_unlisted_client_delivers(make_server, knot):
    server = make_server(
        plugins=["dnsbl", "rcpt_ok", MAILDIR],
        settings=dns_settings(knot.port, dnsbl_zones="bl.e2e.test"),
        proxy=True,
    )
    c = proxied(server, UNLISTED)
    deliver(c, "unlisted")
    [msg] = server.maildir.wait_count(1)
    assert b"Subject: unlisted\n" in msg
    assert f"({UNLISTED})".encode() in msg  # the Received line shows the proxied address


def test_dnsbl_silent_dns_neither_delays_banner_nor_hangs_rcpt(make_server):
    silent = dns_server.start_silent()
    try:
        # The resolver alone would take dns_timeout * (dns_retries + 1) = 30 s; the plugin
        # stops waiting 5 s after connect and counts the zone as not listed.
        server = make_server(
            plugins=["dnsbl timeout 5", "rcpt_ok", MAILDIR],
            settings=dns_settings(silent.port, dnsbl_zones="bl.e2e.test", dns_timeout=10,
                                  dns_retries=2),
            proxy=True,
        )
        t0 = time.monotonic()
        c = proxied(server, LISTED, banner=False)
        c.expect(220)
        banner_s = time.monotonic() - t0
        assert banner_s < 2.0, f"banner took {banner_s:.1f}s with a silent DNS server"
        c.ehlo()
        c.cmd(f"MAIL FROM:<{SENDER}>", 250)
        c.cmd(f"RCPT TO:<{RCPT}>", 250)
        rcpt_s = time.monotonic() - t0
        # Within the plugin's timeout plus a generous margin, far below the resolver's 30 s.
        assert rcpt_s < 5.0 + 7.0, f"RCPT answered {rcpt_s:.1f}s after connect"
        assert silent.received >= 1, "the lookups never reached the (silent) DNS server"
        c.cmd("DATA", 354)
        c.send(dot_stuff(make_message("dns down", ["hello"])))
        c.expect(250)
        c.cmd("QUIT", 221)
        server.maildir.wait_count(1)
    finally:
        silent.stop()


# ---------------------------------------------------------------------------------------------
# Coalescing: 1,000 concurrent connections from one address, one query at the DNS server


N_CONNS = 1000


async def _one_session(port, header, banners, go, results):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(header)
        await writer.drain()
        line = await reader.readline()
        assert line.startswith(b"220 "), line
        banners.append(1)
        await go.wait()

        async def cmd(text):
            writer.write(text.encode() + b"\r\n")
            await writer.drain()
            while True:
                line = await reader.readline()
                if not line:
                    raise ConnectionError(f"closed after {text!r}")
                if line[3:4] == b" ":
                    return line.decode().rstrip("\r\n")

        assert (await cmd("HELO many.test")).startswith("250")
        assert (await cmd(f"MAIL FROM:<{SENDER}>")).startswith("250")
        results.append(await cmd(f"RCPT TO:<{RCPT}>"))
        await cmd("QUIT")
    finally:
        writer.close()


async def _many(port, header, n, deadline):
    banners, results = [], []
    go = asyncio.Event()
    tasks = [asyncio.create_task(_one_session(port, header, banners, go, results)) for _ in range(n)]
    end = time.monotonic() + deadline
    # Every connection has its banner (its connect hook ran and asked) before any goes on.
    while len(banners) < n:
        failed = [t for t in tasks if t.done() and t.exception()]
        if failed:
            raise failed[0].exception()
        if time.monotonic() > end:
            raise AssertionError(f"only {len(banners)}/{n} banners within {deadline}s")
        await asyncio.sleep(0.05)
    go.set()
    done, pending = await asyncio.wait(tasks, timeout=max(1.0, end - time.monotonic()))
    for t in pending:
        t.cancel()
    assert not pending, f"{len(pending)} sessions did not finish within {deadline}s"
    for t in done:
        if t.exception():
            raise t.exception()
    return results


@pytest.mark.parametrize("threads", [1, 2])
def test_dnsbl_coalesces_one_query_for_many_connections(make_server, knot, threads):
    """One zone with its own message: the plugin asks only A. Each worker has its own
    resolver and cache, so with N workers at most N queries reach the DNS server; with one
    worker exactly one."""
    server = make_server(
        plugins=["dnsbl", "rcpt_ok", MAILDIR],
        settings=dns_settings(knot.port, dnsbl_zones="bl.e2e.test:Listed: %IP%"),
        proxy=True,
        threads=threads,
    )
    before = knot.query_count()
    results = asyncio.run(_many(server.proxy_port, proxy_header(LISTED), N_CONNS, 90.0))
    assert len(results) == N_CONNS
    wrong = [r for r in results if r != f"550 5.7.1 Listed: {LISTED}"]
    assert not wrong, f"{len(wrong)} unexpected RCPT replies, e.g. {wrong[:3]}"
    queries = knot.query_count() - before
    if threads == 1:
        assert queries == 1, f"{queries} queries reached knot for {N_CONNS} connections"
    else:
        assert 1 <= queries <= threads, f"{queries} queries reached knot with {threads} workers"


# ---------------------------------------------------------------------------------------------
# resolvable_fromhost


@pytest.mark.parametrize(
    "sender,code,enhanced",
    [
        ("a@example.test", 250, None),  # MX mail.example.test -> A 127.0.0.1
        ("a@nomx.example.test", 250, None),  # no MX: its own A is the implicit MX
        ("a@nosuch.example.test", 450, "4.1.8"),  # NXDOMAIN
        ("a@nullmx.example.test", 550, "5.7.27"),  # RFC 7505 null MX
        ("a@host.broken.test", 450, "4.4.3"),  # SERVFAIL
    ],
    ids=["mx", "implicit-mx", "nxdomain", "null-mx", "servfail"],
)
def test_resolvable_fromhost(make_server, knot, sender, code, enhanced):
    server = make_server(
        plugins=["resolvable_fromhost", "rcpt_ok", MAILDIR],
        settings=dns_settings(knot.port),
        proxy=True,
    )
    c = proxied(server, UNLISTED)
    c.ehlo()
    if code == 250:
        c.cmd(f"MAIL FROM:<{sender}>", 250)
        c.cmd(f"RCPT TO:<{RCPT}>", 250)
    else:
        r = c.cmd(f"MAIL FROM:<{sender}>", code, enhanced=enhanced)
        if code == 550:
            assert "null MX" in r.text, r
    c.cmd("QUIT", 221)


# ---------------------------------------------------------------------------------------------
# fcrdns


def delivered_fields(server, subject):
    [data] = [m for m in server.maildir.wait_count(1) if f"Subject: {subject}\n".encode() in m]
    fields, _ = split_delivered(data)
    return dict(fields)


@pytest.mark.parametrize(
    "client,clause,host",
    [
        ("192.0.2.10", "iprev=pass policy.iprev=192.0.2.10 (mail.fcr.e2e.test)", "mail.fcr.e2e.test"),
        ("192.0.2.11", "iprev=fail policy.iprev=192.0.2.11", None),  # PTR name elsewhere
        ("192.0.2.12", "iprev=permerror policy.iprev=192.0.2.12", None),  # no PTR
    ],
    ids=["pass", "fail", "permerror"],
)
def test_fcrdns_iprev_in_headers(make_server, knot, client, clause, host):
    server = make_server(
        plugins=["fcrdns", "rcpt_ok", MAILDIR],
        settings=dns_settings(knot.port),
        proxy=True,
    )
    c = proxied(server, client)
    deliver(c, "iprev")
    f = delivered_fields(server, "iprev")
    ar = f["Authentication-Results"]
    assert ar.startswith("mx.test; auth=none;"), ar
    assert clause in ar.replace("\n\t", " "), ar
    received = f["Received"]
    assert received.startswith("from "), received
    if host:
        assert received.startswith(f"from {host} (HELO client.test) ({client})"), received
    else:
        assert "fcr.e2e.test" not in received, received
        assert f"({client})" in received, received


# ---------------------------------------------------------------------------------------------
# uribl


def html_message(subject, url):
    html = (
        "<html><body><p>Great offers!</p>"
        f'<p><a href="{url}">click here</a></p></body></html>\r\n'
    ).encode()
    b64 = base64.encodebytes(html).decode().replace("\n", "\r\n").rstrip("\r\n").split("\r\n")
    return make_message(
        subject,
        [
            "--b1",
            "Content-Type: text/plain; charset=us-ascii",
            "",
            "See the HTML part.",
            "--b1",
            "Content-Type: text/html; charset=utf-8",
            "Content-Transfer-Encoding: base64",
            "",
            *b64,
            "--b1--",
        ],
        extra_headers=["MIME-Version: 1.0", 'Content-Type: multipart/alternative; boundary="b1"'],
    )


def test_uribl_denies_listed_domain_in_base64_html(make_server, knot):
    server = make_server(
        plugins=["uribl", "rcpt_ok", MAILDIR],
        settings=dns_settings(knot.port, uribl_zones="uribl.e2e.test -1 deny"),
        proxy=True,
    )
    spam = html_message("spam", "http://www.spammy-shop.test/buy?now=1")
    assert b"spammy" not in spam  # only the decoded base64 names the domain
    c = proxied(server, UNLISTED)
    c.ehlo()
    r = c.transaction(SENDER, [RCPT], spam, 552, enhanced="5.7.1")
    assert "spammy-shop.test" in r.text and "uribl.e2e.test" in r.text, r
    # The same session goes on: a message with an unlisted domain is delivered.
    ham = html_message("ham", "http://www.clean-shop.test/buy?now=1")
    c.transaction(SENDER, [RCPT], ham, 250)
    c.cmd("QUIT", 221)
    msgs = server.maildir.wait_count(1)
    assert len(msgs) == 1 and b"Subject: ham\n" in msgs[0]


# ---------------------------------------------------------------------------------------------
# sender_permitted_from (SPF)

SPF = "sender_permitted_from reject 3"


@pytest.mark.parametrize(
    "client,sender,code,enhanced",
    [
        ("192.0.2.20", "a@pass.spf.e2e.test", 250, None),
        ("192.0.2.20", "a@inc.spf.e2e.test", 250, None),  # through include:
        ("192.0.2.21", "a@pass.spf.e2e.test", 550, "5.7.23"),  # -all: refused at reject 3
        ("192.0.2.21", "a@inc.spf.e2e.test", 550, "5.7.23"),
        ("192.0.2.21", "a@soft.spf.e2e.test", 450, "4.7.23"),  # ~all: deferred at reject 3
        ("192.0.2.21", "a@none.spf.e2e.test", 250, None),  # no policy: accepted
    ],
    ids=["pass", "include-pass", "fail", "include-fail", "softfail", "none"],
)
def test_spf_verdicts_at_mail(make_server, knot, client, sender, code, enhanced):
    server = make_server(plugins=[SPF, "rcpt_ok", MAILDIR], settings=dns_settings(knot.port), proxy=True)
    c = proxied(server, client)
    c.ehlo()
    r = c.cmd(f"MAIL FROM:<{sender}>", code, enhanced=enhanced)
    if code == 550:
        assert "SPF" in r.text, r
    c.cmd("QUIT", 221)


def test_spf_pass_adds_received_spf_and_an_auth_results_clause(make_server, knot):
    server = make_server(plugins=[SPF, "rcpt_ok", MAILDIR], settings=dns_settings(knot.port), proxy=True)
    deliver(proxied(server, "192.0.2.20"), "spf pass", sender="a@pass.spf.e2e.test")
    f = delivered_fields(server, "spf pass")
    ar = f["Authentication-Results"].replace("\n\t", " ")
    assert "spf=pass smtp.mailfrom=pass.spf.e2e.test" in ar, ar
    [data] = server.maildir.messages()
    head = data.split(b"\n\n", 1)[0].decode()
    spf = [line for line in head.split("\n") if line.startswith("Received-SPF: ")]
    assert len(spf) == 1 and spf[0].startswith("Received-SPF: pass "), head
    assert "client-ip=192.0.2.20" in spf[0], spf


def test_spf_silent_dns_defers_never_refuses(make_server):
    """A DNS outage is a temperror: at the strictest level the sender is deferred (4xx) within
    the plugin's timeout, never refused for good."""
    silent = dns_server.start_silent()
    try:
        server = make_server(
            plugins=["sender_permitted_from reject 6 timeout 2", "rcpt_ok", MAILDIR],
            settings=dns_settings(silent.port, dns_timeout=10, dns_retries=2),
            proxy=True,
        )
        c = proxied(server, "192.0.2.20")
        c.ehlo()
        r = c.cmd("MAIL FROM:<a@pass.spf.e2e.test>")
        assert 400 <= r.code < 500 and r.enhanced() == "4.7.24", r
        assert silent.received >= 1, "the SPF lookup never reached the (silent) DNS server"
        c.cmd("QUIT", 221)
    finally:
        silent.stop()
