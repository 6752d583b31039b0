"""Same decisions on every host: three ringsmtpd hosts behind HAProxy (send-proxy-v2) share
greylisting through Redis, and every host logs and uses the client address of the PROXY header.

black_timeout is 4 s so "retried after black_timeout" is a short sleep; nothing here asserts on
how long anything took.
"""

import re
import time

from cluster import BALANCER, CLIENT_POOL, LISTED_CLIENT, MAIL

BLACK = 4
# deny_late 1: greylisting defers at DATA, so the blocklist (at RCPT) speaks first.
PLUGINS = [
    "dnsbl",
    f"greylisting black_timeout {BLACK} grey_timeout 600 deny_late 1",
    "rcpt_ok",
    "queue/maildir {maildir}",
]
MESSAGE = b"From: a@client.test\r\nSubject: grey\r\n\r\nhello from behind the balancer\r\n"


def names_ip(key, ip):
    """Whether a store key has `ip` as a whole part (10.77.0.10 is not in 10.77.0.100)."""
    return re.search(rf"(?<![\d.]){re.escape(ip)}(?![\d.])", key) is not None


def until_host(cluster, source, want):
    """A session from `source` through the balancer that landed on a host for which
    `want(host)` is true (roundrobin: a few tries at most; others are closed with QUIT)."""
    for _ in range(3 * len(MAIL)):
        c = cluster.connect(source)
        if want(c.host):
            return c
        c.cmd("QUIT", 221)
        c.close()
    raise AssertionError(f"the balancer never sent {source} to a wanted host")


def attempt(c, sender="a@client.test"):
    """EHLO, MAIL, RCPT (both 250), DATA: returns the reply to DATA (354 or the deferral); on
    354 sends the message and returns the reply to its final dot."""
    c.ehlo("client.test")
    c.cmd(f"MAIL FROM:<{sender}>", 250)
    c.cmd("RCPT TO:<user@example.test>", 250)
    r = c.cmd("DATA")
    if r.code == 354:
        c.send(MESSAGE.replace(b"\r\n.", b"\r\n..") + b".\r\n")
        r = c.reply()
    c.cmd("QUIT", 221)
    c.close()
    return r


def test_greylisted_triplet_retried_on_another_host_is_accepted(make_cluster):
    cluster = make_cluster(PLUGINS)
    source = CLIENT_POOL[0]

    first = until_host(cluster, source, lambda h: True)
    first_host = first.host
    started = time.monotonic()
    r = attempt(first)
    assert (r.code, r.enhanced()) == (451, "4.7.1"), r

    # Within black_timeout, on a second host: the triplet is known there too, still black.
    second = until_host(cluster, source, lambda h: h != first_host)
    second_host = second.host
    r = attempt(second)
    assert (r.code, r.enhanced()) == (451, "4.7.1"), r
    assert "try again in" in r.text, r

    left = started + BLACK + 0.5 - time.monotonic()
    if left > 0:
        time.sleep(left)
    # After black_timeout, on the third host, which never saw this client: a host with a store
    # of its own would defer a triplet new to it; through Redis it is accepted.
    third = until_host(cluster, source, lambda h: h not in (first_host, second_host))
    third_host = third.host
    r = attempt(third)
    assert r.code == 250, r
    host = cluster.mail[third_host]
    data = host.maildir.wait_count(1)[0]
    # The client address everywhere is the PROXY header's, never the balancer's.
    assert f"({source})".encode() in data.split(b"\n\n", 1)[0], data[:600]
    assert b"hello from behind the balancer" in data
    for name in (first_host, second_host, third_host):
        log = cluster.mail[name].log()
        assert f"connect from {source}:" in log, f"{name}: {log[-2000:]}"
    assert "pass: updated grey->white" in cluster.mail[third_host].log()
    # Exactly one copy, on the host that said 250.
    assert sum(len(h.maildir.files()) for h in cluster.mail.values()) == 1
    # The state is keyed by the client's address, and nothing by the balancer's.
    keys = cluster.redis.keys()
    assert any(names_ip(k, source) for k in keys), keys
    assert not any(names_ip(k, BALANCER) for k in keys), keys

    # Whitelisted now: a new sender from that address passes at once, on whichever host.
    for _ in range(len(MAIL)):
        r = attempt(cluster.connect(source), sender="other@client.test")
        assert r.code == 250, r


def test_every_host_checks_the_proxy_address_against_the_blocklist(make_cluster):
    cluster = make_cluster(PLUGINS)
    refused_on = set()
    # The listed address is refused at RCPT on every host it reaches (roundrobin: each of the
    # three in turn); an unlisted one from the same client machine is not.
    for _ in range(len(MAIL)):
        c = cluster.connect(LISTED_CLIENT)
        c.ehlo("client.test")
        c.cmd("MAIL FROM:<a@client.test>", 250)
        r = c.cmd("RCPT TO:<user@example.test>")
        assert (r.code, r.enhanced()) == (550, "5.7.1"), (c.host, r)
        assert LISTED_CLIENT in r.text, r
        refused_on.add(c.host)
        c.cmd("QUIT", 221)
        c.close()
    assert refused_on == set(MAIL), refused_on
    for source in CLIENT_POOL[1:4]:
        c = cluster.connect(source)
        c.ehlo("client.test")
        c.cmd("MAIL FROM:<a@client.test>", 250)
        c.cmd("RCPT TO:<user@example.test>", 250)
        c.cmd("QUIT", 221)
        c.close()


def test_a_concurrency_limit_per_ip_holds_across_hosts(make_cluster):
    # limit keeps its counts in Redis: N sessions from one address, spread over the hosts by
    # the balancer, fill the limit wherever the next one lands.
    n = 4
    cluster = make_cluster([f"limit concurrency {n}"] + PLUGINS)
    source, other = CLIENT_POOL[4], CLIENT_POOL[5]
    held = []
    try:
        for _ in range(n):
            c = cluster.connect(source)
            c.ehlo("client.test")
            held.append(c)
        assert len({c.host for c in held}) >= 2, [c.host for c in held]  # roundrobin
        for _ in range(len(MAIL)):  # the next one is refused on every host it reaches
            over = cluster.connect(source, banner=False)
            r = over.reply()
            assert (r.code, r.enhanced()) == (421, "4.7.0"), r
            over.close()
        fine = cluster.connect(other)
        fine.ehlo("client.test")
        fine.cmd("QUIT", 221)
        fine.close()
        # One of the N ends: its count is given back, so a new session from that address is
        # served again (a few tries: the count is given back as the session ends).
        first = held.pop(0)
        first.cmd("QUIT", 221)
        first.close()
        for _ in range(50):
            c = cluster.connect(source, banner=False)
            r = c.reply()
            if r.code == 220:
                held.append(c)
                break
            c.close()
            time.sleep(0.1)
        else:
            raise AssertionError(f"still refused after one of the {n} sessions ended: {r}")
    finally:
        for c in held:
            c.close()

