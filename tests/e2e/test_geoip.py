"""ident/geoip end to end: the release binary with a MaxMind database the test writes with
libmaxmind-db-writer-perl (plugins/src/ident/testdata/make-test-mmdb.pl), clients presented
through the server's PROXY listener as addresses the database places (192.0.2.10 Berlin,
192.0.2.200 Munich, 198.51.100.3 New York): country and distance in the headers, the
greylisting exemption of `geoip`, and a missing database refused at start and by --check.
"""

import shutil
import subprocess

import pytest

from conftest import ROOT, Client, make_message, server_env

WRITER = ROOT / "plugins" / "src" / "ident" / "testdata" / "make-test-mmdb.pl"
MAILDIR = "queue/maildir {maildir}"
SENDER = "sender@example.org"
RCPT = "rcpt@example.test"


@pytest.fixture
def db_dir(tmp_path):
    """A directory with the test databases, freshly written by the Perl writer."""
    d = tmp_path / "GeoIP"
    d.mkdir()
    if shutil.which("perl") is None:
        pytest.fail("perl is not installed")
    done = subprocess.run(["perl", str(WRITER), str(d)], capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        pytest.fail(
            "make-test-mmdb.pl failed (tests/run installs libmaxmind-db-writer-perl):\n" + done.stderr
        )
    assert (d / "GeoLite2-City.mmdb").stat().st_size > 0
    return d


def proxied(server, src):
    c = Client(server.proxy_port)
    c.send(f"PROXY TCP4 {src} 127.0.0.1 40000 25\r\n".encode())
    c.expect(220)
    return c


def deliver_from(server, src, subject):
    """One message from a client the server sees at `src`; returns the delivered file."""
    before = set(server.maildir.files())
    c = proxied(server, src)
    c.ehlo()
    c.transaction(SENDER, [RCPT], make_message(subject, ["hello"]), 250)
    c.cmd("QUIT", 221)
    c.close()
    server.maildir.wait_count(len(before) + 1)
    (new,) = set(server.maildir.files()) - before
    return new.read_bytes()


def header_fields(data):
    """The delivered message's header fields (unfolded), as a dict of name -> value; a name
    seen twice fails the test (the plugin must add each field once)."""
    head = data.replace(b"\r\n", b"\n").split(b"\n\n", 1)[0].decode()
    fields = {}
    for line in head.replace("\n\t", " ").replace("\n ", " ").split("\n"):
        name, _, value = line.partition(":")
        assert name not in fields or not name.startswith("X-"), f"{name} twice in {head}"
        fields[name] = value.strip()
    return fields


def test_country_city_and_distance_in_the_headers(make_server, db_dir):
    server = make_server(
        plugins=[f"ident/geoip db_dir {db_dir} distance 192.0.2.10 too_far 1000", "rcpt_ok", MAILDIR],
        proxy=True,
    )
    fields = header_fields(deliver_from(server, "192.0.2.200", "geo"))
    assert fields.get("X-GeoIP-Country") == "DE", fields
    assert fields.get("X-GeoIP-Continent") == "EU", fields
    assert fields.get("X-GeoIP-City") == "Munich", fields
    assert fields.get("X-GeoIP-ASN") == "64496", fields
    assert fields.get("X-GeoIP-Distance") == "505 km", fields
    server.wait_log("EU, DE, Munich, AS64496, 505 km")

    # Across the Atlantic: farther than too_far, one karma point down (logged; `karma`, not
    # loaded here, would count it).
    fields = header_fields(deliver_from(server, "198.51.100.3", "far"))
    assert fields.get("X-GeoIP-Country") == "US", fields
    assert int(fields["X-GeoIP-Distance"].split()[0]) > 6000, fields
    server.wait_log("too far, karma -1")

    # An address in no database: no GeoIP header at all.
    assert b"X-GeoIP" not in deliver_from(server, "100.64.0.1", "nowhere")


def test_greylisting_exempts_the_listed_countries(make_server, db_dir):
    server = make_server(
        plugins=[f"ident/geoip db_dir {db_dir} add_headers false", "greylisting geoip DE,AT",
                 "rcpt_ok", MAILDIR],
        proxy=True,
    )
    c = proxied(server, "192.0.2.10")
    c.ehlo()
    c.cmd(f"MAIL FROM:<{SENDER}>", 250)
    c.cmd("QUIT", 221)
    c = proxied(server, "198.51.100.3")
    c.ehlo()
    r = c.cmd(f"MAIL FROM:<{SENDER}>", 451, "4.7.1")
    assert "Greylisted" in r.text
    c.cmd("QUIT", 221)
    server.wait_log("skip: geoip country DE")


def test_a_missing_database_is_refused_at_start(make_server, tmp_path):
    empty = tmp_path / "no-geoip"
    empty.mkdir()
    server = make_server(plugins=[f"ident/geoip db_dir {empty}", "rcpt_ok", MAILDIR], start=False)
    check = server.check_config()
    assert check.returncode != 0, check.stdout + check.stderr
    assert "no GeoIP database in" in check.stdout + check.stderr
    (empty / "GeoLite2-Country.mmdb").write_bytes(b"not a MaxMind database at all")
    check = server.check_config()
    assert check.returncode != 0
    assert "not a valid MaxMind database" in check.stdout + check.stderr
    proc = subprocess.run(server.args(), cwd=server.dir, env=server_env(server.dir),
                          capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    assert proc.returncode != 0
    assert "not a valid MaxMind database" in proc.stdout + proc.stderr
