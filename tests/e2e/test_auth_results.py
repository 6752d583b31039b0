"""One Authentication-Results header per message, and forged ones renamed (RFC 8601 §5):
messages claiming our authserv-id ("dkim=pass") are sent over one connection, one kept in
memory and one spooled to disk, and the delivered Maildir files are read back."""

import email
import email.policy
import smtplib

from conftest import IO_TIMEOUT, ME

FORGED = (
    f"Authentication-Results: {ME.upper()};\r\n\tdkim=pass header.d=bank.example\r\n"
    f"Authentication-Results: (looks like ours) \"{ME}\"; spf=pass smtp.mailfrom=bank.example\r\n"
    "Authentication-Results: relay.example.org; spf=fail smtp.mailfrom=bank.example\r\n"
)


def message(subject, body_lines):
    head = FORGED + f"From: <ceo@bank.example>\r\nTo: <rcpt@example.test>\r\nSubject: {subject}\r\n\r\n"
    return head + "".join(f"{line}\r\n" for line in body_lines)


def fields(raw, name):
    msg = email.message_from_bytes(raw, policy=email.policy.compat32)
    return [str(v) for v in msg.get_all(name, [])]


def test_forged_authentication_results_never_survive(make_server):
    server = make_server(settings={"size_threshold": 4096})
    small = message("in memory", ["hello"])
    big = message("spooled", [f"{i:05} " + "z" * 70 for i in range(200)])
    with smtplib.SMTP("127.0.0.1", server.port, local_hostname="client.test", timeout=IO_TIMEOUT) as s:
        for msg in (small, big):
            refused = s.sendmail("ceo@bank.example", ["rcpt@example.test"], msg.encode())
            assert refused == {}, refused
    delivered = server.maildir.wait_count(2)
    assert len(delivered) == 2
    subjects = sorted(fields(raw, "Subject")[0] for raw in delivered)
    assert subjects == ["in memory", "spooled"]
    for raw in delivered:
        # The server's own header comes first; the only other one is another server's.
        kept = fields(raw, "Authentication-Results")
        assert len(kept) == 2, kept
        assert kept[0].startswith(f"{ME}; auth=none"), kept
        assert kept[1].strip().startswith("relay.example.org;"), kept
        assert not any("dkim=pass" in v or "spf=pass" in v for v in kept), kept
        renamed = fields(raw, "X-Forged-Authn-Results")
        assert len(renamed) == 2 and "dkim=pass" in renamed[0], renamed
    assert server.maildir.files("tmp") == []
