"""queue/smtp-forward into a real Postfix: a private Postfix instance (own config, queue and
Maildir under /tmp/ringsmtpd-pfdown.*) listens on a free loopback port and delivers into a
Maildir with its `virtual` agent; ringsmtpd forwards to it. Checked on Postfix's side: the
envelope (Return-Path, Delivered-To), the headers and the body; the reply our client gets;
nothing lost when Postfix is down; a load of messages arriving exactly once each; XCLIENT;
STARTTLS with the certificate checked against a CA file.

LMTP (queue/lmtp) is tested end to end against Dovecot's LMTP server in
test_lmtp_dovecot.py.

Needs the Debian package `postfix` (tests/run installs it) and root (Postfix's master).
"""

import hashlib
import threading
import time

import pytest

from conftest import IO_TIMEOUT, ME, free_port, make_message, send_message, wait_for

SENDER = "sender@client.test"

# What a receiving MTA needs beyond private_postfix's core: mail from loopback clients for
# example.test only (refused relay elsewhere), XCLIENT/XFORWARD from loopback, STARTTLS with the
# instance's own certificate when the test asks (tls_level "may"), Postfix's TLS Received clause.
DOWNSTREAM_MAIN_CF = {
    "mynetworks": "127.0.0.0/8",
    "smtpd_relay_restrictions": "reject_unauth_destination",
    "smtpd_authorized_xclient_hosts": "127.0.0.0/8",
    "smtpd_authorized_xforward_hosts": "127.0.0.0/8",
    "smtpd_tls_cert_file": "{base}/ssl/qpsmtpd-server.crt",
    "smtpd_tls_key_file": "{base}/ssl/qpsmtpd-server.key",
    "smtpd_tls_received_header": "yes",
}
DOWNSTREAM_SERVICES = ("pickup", "flush", "proxymap", "smtp", "relay", "tlsmgr")


@pytest.fixture
def downstream(make_postfix):
    """downstream(tls_level="none", start=True) -> a private Postfix that receives on
    127.0.0.1:.port and delivers mail for example.test into its Maildir (.files(), .wait_files())."""

    def make(tls_level="none", start=True):
        return make_postfix(
            "ringsmtpd-pfdown.", "downstream.test", start=start,
            main=dict(DOWNSTREAM_MAIN_CF, smtpd_tls_security_level=tls_level),
            services=DOWNSTREAM_SERVICES, listen_port=free_port(), virtual_domain="example.test",
            tls_cert=tls_level != "none",
        )

    return make


def forward_server(make_server, port, extra="", threads=None):
    return make_server(plugins=["rcpt_ok", f"queue/smtp-forward 127.0.0.1 {port} {extra}".strip()],
                       settings={"size_threshold": 65536}, threads=threads)


def header(data, name):
    head = data.split(b"\n\n", 1)[0].decode(errors="replace")
    return [l.split(": ", 1)[1] for l in head.split("\n") if l.lower().startswith(name.lower() + ": ")]


def test_forwarded_message_arrives_in_postfix(make_server, downstream):
    pf = downstream()
    server = forward_server(make_server, pf.port)
    body = [".leading dot", "..two dots", ".", "Grüße", "x" * 900]
    message = make_message("forwarded", body)
    reply = send_message(server, ["one@example.test", "two@example.test"], message)
    assert reply.code == 250, reply
    assert "queued as" in reply.text.lower(), reply  # Postfix's own queue id, relayed
    files = pf.wait_files(2)
    assert len(files) == 2
    delivered_to = sorted(header(f, "Delivered-To")[0] for f in files)
    assert delivered_to == ["one@example.test", "two@example.test"]
    for f in files:
        assert header(f, "Return-Path") == [f"<{SENDER}>"]
        received = header(f, "Received")
        # Postfix's Received (from us) on top of ringsmtpd's (from the client).
        assert "by downstream.test (Postfix)" in f.decode(errors="replace")
        assert f"by {ME} (ringsmtpd/".encode() in f
        assert b"Subject: forwarded" in f
        assert b"Authentication-Results: " + ME.encode() in f
        got_body = f.split(b"\n\n", 1)[1]
        assert got_body == ("\n".join(body) + "\n").encode()
        assert received


def test_downstream_down_gives_4xx_and_nothing_is_lost(make_server, downstream):
    pf = downstream(start=False)
    server = forward_server(make_server, pf.port)
    message = make_message("retry me", ["must not be lost"])
    reply = send_message(server, ["one@example.test"], message)
    assert reply.code == 452 and reply.enhanced() == "4.4.1", reply
    # The client keeps the message and retries once the downstream is back: it arrives once.
    pf.start()
    reply = send_message(server, ["one@example.test"], message)
    assert reply.code == 250, reply
    [f] = pf.wait_files(1)
    assert f.endswith(b"\n\nmust not be lost\n")
    wait_for(lambda: list(server.spool.iterdir()) == [], IO_TIMEOUT, "the spool dir to be emptied")


def test_downstream_refusal_is_relayed(make_server, downstream):
    pf = downstream()
    # ringsmtpd accepts elsewhere.test; Postfix does not receive mail for it and refuses relay.
    server = make_server(
        plugins=["rcpt_ok", f"queue/smtp-forward 127.0.0.1 {pf.port}"],
        settings={"rcpthosts": "example.test\nelsewhere.test"},
    )
    reply = send_message(server, ["one@example.test", "nobody@elsewhere.test"], make_message("mixed", ["x"]))
    assert reply.code // 100 == 5, reply
    assert reply.enhanced() == "5.7.1", reply
    assert "<nobody@elsewhere.test>:" in reply.text, reply
    assert "not delivered to any recipient" in reply.text, reply
    time.sleep(1)
    assert pf.files() == [], "nothing may be delivered when a recipient is refused"


def test_load_arrives_exactly_once(make_server, downstream):
    pf = downstream()
    server = forward_server(make_server, pf.port)
    n_threads, per_thread = 8, 25
    sent = {}
    errors = []
    lock = threading.Lock()

    def worker(k):
        try:
            c = server.connect()
            c.ehlo()
            for i in range(per_thread):
                body = [f"message {k}-{i}", hashlib.sha256(f"{k}-{i}".encode()).hexdigest() * 3]
                message = make_message(f"load {k}-{i}", body)
                r = c.transaction(SENDER, [f"load{k}@example.test"], message)
                if r.code == 250:
                    with lock:
                        sent[f"{k}-{i}"] = hashlib.sha256(("\n".join(body) + "\n").encode()).hexdigest()
                else:
                    errors.append(r)
            c.cmd("QUIT", 221)
            c.close()
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors[:3]
    total = n_threads * per_thread
    assert len(sent) == total
    files = pf.wait_files(total, deadline=120)
    got = {}
    for f in files:
        subject = header(f, "Subject")[0].removeprefix("load ")
        digest = hashlib.sha256(f.split(b"\n\n", 1)[1]).hexdigest()
        assert subject not in got, f"{subject} delivered twice"
        got[subject] = digest
    assert got == sent
    # The pool kept connections open: far fewer downstream connections than messages.
    connects = pf.log().count(": connect from ")
    print(f"{total} messages over {connects} downstream connections")
    assert connects < total, f"{connects} connections for {total} messages"


def test_xclient_passes_the_client_to_postfix(make_server, downstream):
    pf = downstream()
    # One worker: both messages use its pool (each worker has its own).
    server = forward_server(make_server, pf.port, "xclient", threads=1)
    reply = send_message(server, ["one@example.test"], make_message("xclient", ["hi"]), helo="original-helo.test")
    assert reply.code == 250, reply
    [f] = pf.wait_files(1)
    text = f.decode(errors="replace")
    # Postfix's Received names the original client's HELO, not ours.
    assert "Received: from original-helo.test (" in text, text[:600]
    assert f"Received: from {ME} (" not in text
    # A second client: the pooled connection gets a new XCLIENT with the new HELO.
    reply = send_message(server, ["two@example.test"], make_message("xclient 2", ["hi"]), helo="second-helo.test")
    assert reply.code == 250, reply
    files = pf.wait_files(2)
    second = [f for f in files if b"Subject: xclient 2" in f][0].decode(errors="replace")
    assert "Received: from second-helo.test (" in second, second[:600]
    # Postfix logs through postlogd, asynchronously: wait until the connect line is there.
    wait_for(lambda: ": connect from " in pf.log(), 30, "Postfix's connect log line")
    log = pf.log()
    assert log.count(": connect from ") - log.count("lost connection after CONNECT") == 1, \
        "the second message should reuse the pooled connection"


def test_starttls_required_and_verified(make_server, downstream):
    pf = downstream(tls_level="may")
    ca = pf.ssl / "qpsmtpd-ca.crt"
    server = forward_server(
        make_server, pf.port, f"tls require tls_verify cafile:{ca} tls_name downstream.test"
    )
    reply = send_message(server, ["one@example.test"], make_message("tls", ["secret"]))
    assert reply.code == 250, (reply, server.log()[-2000:])
    [f] = pf.wait_files(1)
    assert "(using TLSv1." in f.decode(errors="replace"), f[:800]
    # The wrong name: the certificate check fails and nothing is sent in the clear.
    server2 = forward_server(make_server, pf.port, f"tls require tls_verify cafile:{ca} tls_name wrong.test")
    reply = send_message(server2, ["two@example.test"], make_message("tls", ["secret"]))
    assert reply.code == 452 and reply.enhanced() == "4.7.5", reply
    time.sleep(1)
    assert len(pf.files()) == 1


def test_large_spooled_message(make_server, downstream):
    pf = downstream()
    server = forward_server(make_server, pf.port)
    lines = [("." if i % 5 == 0 else "") + f"{i:07d} " + "abcdefghij" * 9 for i in range(30000)]
    message = make_message("big", lines)  # ~3 MB: above size_threshold, streamed from the spool
    reply = send_message(server, ["big@example.test"], message)
    assert reply.code == 250, reply
    [f] = pf.wait_files(1)
    assert f.split(b"\n\n", 1)[1] == ("\n".join(lines) + "\n").encode()
    wait_for(lambda: list(server.spool.iterdir()) == [], IO_TIMEOUT, "the spool dir to be emptied")
