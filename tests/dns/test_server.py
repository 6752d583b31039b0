"""The DNS test harness itself (tests/dns/server.py): knot starts with the test zones, answers
them, counts queries, and the misbehaving helpers misbehave as documented. The DNS client is
tested against it in tests/dns/main.rs (cargo test); the plugins in their e2e tests."""

import socket

import pytest

import server


@pytest.fixture
def knot():
    k = server.start_knot()
    yield k
    k.stop()


def test_zones_answer(knot):
    q = lambda name, t="A", **kw: server.query(knot.port, name, t, **kw)[:3]
    assert q("2.0.0.127.dnsbl.test") == (0, 1, False)
    assert q("2.0.0.127.dnsbl.test", "TXT") == (0, 1, False)
    assert q("1.0.0.127.dnsbl.test")[0] == 3  # NXDOMAIN: not listed
    assert q("bad.example.test.rhsbl.test") == (0, 1, False)
    assert q("1.0.0.127.in-addr.arpa", "PTR") == (0, 1, False)
    assert q("example.test", "MX") == (0, 1, False)
    assert q("example.test", "AAAA") == (0, 1, False)
    assert q("big.example.test", "TXT") == (0, 0, True)  # truncated over UDP
    assert q("big.example.test", "TXT", tcp=True) == (0, 60, False)
    assert q("x.broken.test")[0] == 2  # SERVFAIL
    assert knot.counts() == {"udp": 9, "tcp": 1}
    assert knot.query_count() == 10


def test_extra_zones(knot):
    extra = server.start_knot(
        zones={"extra.test": "$ORIGIN extra.test.\n$TTL 60\n@ SOA ns hm 1 60 60 60 60\n"
                             "@ NS ns\nns A 127.0.0.1\nhost A 127.0.0.9\n"},
        only=True,
    )
    try:
        assert server.query(extra.port, "host.extra.test")[:2] == (0, 1)
        assert server.query(extra.port, "example.test", "MX")[0] == 5  # REFUSED: not ours
    finally:
        extra.stop()


def test_silent_and_spoofing_proxy(knot):
    with server.start_silent() as silent:
        with pytest.raises(socket.timeout):
            server.query(silent.port, "example.test", timeout=0.3)
    with server.start_spoofing_proxy(knot.port) as proxy:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.settimeout(2)
        s.sendto(server.build_query("example.test", "MX", qid=0x4242), ("127.0.0.1", proxy.port))
        replies = [s.recvfrom(4096)[0] for _ in range(3)]
        s.close()
        ids = [int.from_bytes(r[:2], "big") for r in replies]
        assert ids[0] != 0x4242 and ids[1:] == [0x4242, 0x4242]
        assert replies[1] != replies[2]  # wrong question, then the real reply
        assert proxy.forged == 2


def test_missing_knot_says_how_to_install(monkeypatch):
    monkeypatch.setattr(server, "_which", lambda name: None)
    with pytest.raises(RuntimeError, match="apt-get install knot"):
        server.start_knot()
