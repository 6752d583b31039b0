"""Postfix as a real relaying client: a private Postfix instance (private_postfix.py: own
config and queue directories under /tmp/ringsmtpd-postfix.*, no listener,
`relayhost = [127.0.0.1]:PORT`) takes mail from its `sendmail` and relays it to ringsmtpd, whose
Maildir must then hold it.
"""

import time

import pytest

from conftest import ME, split_delivered, wait_for

SENDER = "sender@postfix.test"


# A relaying null client: mail from its sendmail goes to ringsmtpd, nothing else.
def relay_client_main_cf(port):
    """The main.cf settings (beyond private_postfix's core) that relay everything to
    ringsmtpd on 127.0.0.1:port, in the clear and without a connection cache."""
    return {
        "mynetworks": "127.0.0.0/8",
        "relayhost": f"[127.0.0.1]:{port}",
        "smtp_tls_security_level": "none",
        "smtp_connection_cache_on_demand": "no",
    }


# Only the services a relaying null client needs besides the core ones; no smtpd: nothing listens.
RELAY_CLIENT_SERVICES = ("pickup", "flush", "smtp", "relay")


@pytest.fixture
def postfix(make_server, make_postfix):
    """A private Postfix relaying to a fresh ringsmtpd (its `.server`)."""
    server = make_server(settings={"size_threshold": 65536})
    pf = make_postfix("ringsmtpd-postfix.", "postfix.test", main=relay_client_main_cf(server.port),
                      services=RELAY_CLIENT_SERVICES)
    pf.server = server
    return pf


def wait_delivered(pf, n, deadline=90):
    """Polls the Maildir, flushing Postfix's queue now and then; fails with both logs."""
    end = time.monotonic() + deadline
    last_flush = 0.0
    while True:
        files = pf.server.maildir.messages()
        if len(files) >= n:
            return files
        now = time.monotonic()
        if now > end:
            pytest.fail(
                f"{len(files)} of {n} messages arrived within {deadline}s\n"
                f"postfix queue:\n{pf.queue_listing()}\npostfix log:\n{pf.log()[-4000:]}\n"
                f"ringsmtpd log:\n{pf.server.log()[-4000:]}"
            )
        if now - last_flush > 3:
            pf.flush()
            last_flush = now
        time.sleep(0.1)


def body_after_postfix_headers(rest):
    """The part after the header section Postfix wrote (it adds Received, Message-Id, ...)."""
    head, sep, body = rest.partition(b"\n\n")
    assert sep, "no header/body separator"
    return head, body


def test_postfix_relays_to_ringsmtpd(postfix):
    rcpts = ["one@example.test", "two@example.test"]
    body_lines = [
        "Relayed by a real Postfix.",
        ".a line starting with a dot",
        ".",
        "..",
        "Grüße, 8-bit text",
        "x" * 990,
    ]
    message = (
        "From: Sender <sender@postfix.test>\n"
        "To: one@example.test, two@example.test\n"
        "Subject: through postfix\n"
        "MIME-Version: 1.0\n"
        "Content-Type: text/plain; charset=utf-8\n"
        "Content-Transfer-Encoding: 8bit\n"
        "\n" + "\n".join(body_lines) + "\n"
    ).encode()
    postfix.sendmail(SENDER, rcpts, message)
    postfix.flush()
    [f] = wait_delivered(postfix, 1)
    fields, rest = split_delivered(f, len(rcpts))
    assert fields[0] == ("Return-Path", f"<{SENDER}>")
    assert [v for _, v in fields[1:3]] == rcpts
    assert fields[3] == ("Authentication-Results", f"{ME}; auth=none")
    received = fields[4][1]
    assert received.startswith("from unknown (HELO postfix.test) (127.0.0.1)\n\tby mx.test (ringsmtpd/")
    assert " with ESMTP; " in received
    head, body = body_after_postfix_headers(rest)
    assert b"Received: by postfix.test (Postfix" in head
    assert b"Subject: through postfix" in head
    assert body == ("\n".join(body_lines) + "\n").encode()
    # Postfix logs the delivery after it got our 250, so the line may trail the Maildir file.
    wait_for(lambda: "status=sent (250 2.0.0 Queued!" in postfix.log(), 30, "Postfix's status=sent log line")


def test_postfix_relays_a_large_message_and_several_messages(postfix):
    big_lines = [f"{i:07d} " + "abcdefghij" * 9 for i in range(30000)]  # ~3 MB: spooled
    messages = {
        "big": "Subject: big\n\n" + "\n".join(big_lines) + "\n",
        "small1": "Subject: small1\n\nfirst small\n",
        "small2": "Subject: small2\n\nsecond small\n",
    }
    for name, text in messages.items():
        postfix.sendmail(SENDER, [f"{name}@example.test"], text.encode())
    postfix.flush()
    files = wait_delivered(postfix, 3)
    for name, text in messages.items():
        [f] = [f for f in files if f"Delivered-To: {name}@example.test\n".encode() in f]
        _, rest = split_delivered(f, 1)
        _, body = body_after_postfix_headers(rest)
        assert body == text.split("\n\n", 1)[1].encode(), name
    assert list(postfix.server.spool.iterdir()) == []


def test_postfix_sees_the_refusal_of_a_foreign_recipient(postfix):
    postfix.sendmail(SENDER, ["ok@example.test", "nobody@elsewhere.invalid"], b"Subject: mixed\n\nmixed\n")
    postfix.flush()
    [f] = wait_delivered(postfix, 1)
    fields, _ = split_delivered(f, 1)
    assert fields[1] == ("Delivered-To", "ok@example.test")
    deadline = time.monotonic() + 30
    while "nobody@elsewhere.invalid" not in postfix.log() or "550 5.7.1" not in postfix.log():
        if time.monotonic() > deadline:
            pytest.fail(f"Postfix never logged the 550 for the foreign recipient:\n{postfix.log()}")
        time.sleep(0.1)
