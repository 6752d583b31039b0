"""Delivery through real clients: what lands in the Maildir is compared byte for byte with
what was sent (CRLF -> LF, the server's prepended headers checked and stripped)."""

import smtplib
import threading

from conftest import (
    IO_TIMEOUT,
    check_delivered,
    dot_stuff,
    make_message,
    parse_replies,
    wait_for,
)

SENDER = "sender@client.test"
RCPT = "rcpt@example.test"


def smtp(server):
    return smtplib.SMTP("127.0.0.1", server.port, local_hostname="client.test", timeout=IO_TIMEOUT)


def test_smtplib_plain_send(server):
    msg = make_message("plain", ["Hello,", "", "a plain message.", "-- ", "sig"])
    with smtp(server) as s:
        code, _ = s.ehlo()
        assert code == 250
        for ext in ("pipelining", "8bitmime", "size", "enhancedstatuscodes", "smtputf8", "chunking"):
            assert s.has_extn(ext), f"EHLO does not advertise {ext}: {s.esmtp_features}"
        assert s.esmtp_features["size"] == "52428800"
        code, text = s.mail(SENDER)
        assert code == 250 and text.startswith(b"2.1.0 "), (code, text)
        code, text = s.rcpt(RCPT)
        assert code == 250 and text.startswith(b"2.1.5 "), (code, text)
        code, text = s.data(msg)
        assert code == 250 and text.startswith(b"2.0.0 Queued!"), (code, text)
        code, text = s.noop()
        assert (code, text) == (250, b"2.0.0 OK")
    m = check_delivered(server.maildir.only(), SENDER, [RCPT], msg, helo="client.test")
    assert m.group("host") == "unknown"
    assert server.maildir.files("tmp") == []


def test_pipelined_transaction_in_one_write(server):
    msg = make_message("pipelined", ["line one", ".dot line", "line three"])
    c = server.connect()
    batch = (
        b"EHLO pipe.test\r\n"
        b"MAIL FROM:<sender@client.test>\r\n"
        b"RCPT TO:<a@example.test>\r\n"
        b"RCPT TO:<nobody@elsewhere.invalid>\r\n"
        b"RCPT TO:<b@example.test>\r\n"
        b"DATA\r\n" + dot_stuff(msg) + b"NOOP\r\nQUIT\r\n"
    )
    c.send(batch)
    data = c.read_until_closed()
    replies = parse_replies(data)
    codes = [r.code for r in replies]
    assert codes == [250, 250, 250, 550, 250, 354, 250, 250, 221], replies
    assert "PIPELINING" in replies[0].lines
    assert replies[1].enhanced() == "2.1.0"
    assert replies[2].enhanced() == "2.1.5"
    assert replies[3].enhanced() == "5.7.1"  # not a local domain: never an open relay
    assert replies[6].enhanced() == "2.0.0" and "Queued!" in replies[6].text
    assert replies[8].enhanced() == "2.0.0"
    check_delivered(
        server.maildir.only(), SENDER, ["a@example.test", "b@example.test"], msg, helo="pipe.test"
    )


def test_pipelined_several_transactions_in_one_write(server):
    msgs = [make_message(f"batch {i}", [f"message number {i}", "."]) for i in range(3)]
    batch = b"EHLO pipe.test\r\n"
    for i, m in enumerate(msgs):
        batch += f"MAIL FROM:<s{i}@client.test>\r\nRCPT TO:<r{i}@example.test>\r\nDATA\r\n".encode()
        batch += dot_stuff(m)
    batch += b"QUIT\r\n"
    c = server.connect()
    c.send(batch)
    replies = parse_replies(c.read_until_closed())
    assert [r.code for r in replies] == [250] + [250, 250, 354, 250] * 3 + [221], replies
    files = server.maildir.messages()
    assert len(files) == 3
    for i, m in enumerate(msgs):
        [f] = [f for f in files if f"Subject: batch {i}\n".encode() in f]
        check_delivered(f, f"s{i}@client.test", [f"r{i}@example.test"], m)


def test_dot_stuffed_lines(server):
    body = [".", "..", "...", ".leading dot", "..two dots", " .space dot", "end ."]
    msg = make_message("dots", body)
    # smtplib stuffs dots itself.
    with smtp(server) as s:
        s.sendmail(SENDER, [RCPT], msg)
    check_delivered(server.maildir.only(), SENDER, [RCPT], msg)
    # A raw client: the stuffing made explicit.
    payload = dot_stuff(msg)
    assert b"\r\n..\r\n...\r\n....\r\n" in payload
    for f in server.maildir.files():
        f.unlink()
    c = server.connect()
    c.ehlo()
    c.start_data(SENDER, [RCPT])
    c.send(payload)
    c.expect(250, "2.0.0")
    c.cmd("QUIT", 221)
    check_delivered(server.maildir.only(), SENDER, [RCPT], msg)


def test_8bit_body_with_8bitmime(server):
    raw8 = bytes(b for b in range(0x80, 0x100))
    body = [
        "Grüße aus Köln, naïve café, 日本語のテキスト".encode("utf-8"),
        raw8,  # every high byte, not valid UTF-8: 8BITMIME is octets
        b"\x01\x02\x7f tab:\t end",
    ]
    msg = make_message("8bit", body, ["Content-Type: text/plain; charset=utf-8", "Content-Transfer-Encoding: 8bit"])
    with smtp(server) as s:
        s.ehlo()
        refused = s.sendmail(SENDER, [RCPT], msg, mail_options=["BODY=8BITMIME"])
        assert refused == {}
    check_delivered(server.maildir.only(), SENDER, [RCPT], msg)


def test_smtputf8_addresses(server):
    sender = "jörg@bücher.test"
    rcpts = ["用户@example.test", "ñandú@example.test"]
    msg = make_message("utf8", ["Ünïcödé body"]).replace(b"rcpt@example.test", rcpts[0].encode())
    with smtp(server) as s:
        s.ehlo()
        refused = s.sendmail(sender, rcpts, msg, mail_options=["SMTPUTF8", "BODY=8BITMIME"])
        assert refused == {}
    check_delivered(server.maildir.only(), sender, rcpts, msg, proto="UTF8SMTP")


def test_utf8_address_without_smtputf8_is_refused(server):
    c = server.connect()
    c.ehlo()
    r = c.cmd("MAIL FROM:<jörg@client.test>")
    assert r.code in (501, 553, 555), r
    assert r.enhanced() and r.enhanced().startswith("5."), r
    c.cmd("QUIT", 221)
    server.maildir.assert_empty()


def test_long_lines(server):
    line5k = ("0123456789abcdef" * 400)[:5000]
    line100k = ("x" * 99_999) + "."
    msg = make_message("long", [line5k, "short", line100k, "." + line5k])
    with smtp(server) as s:
        s.sendmail(SENDER, [RCPT], msg)
    check_delivered(server.maildir.only(), SENDER, [RCPT], msg)


def test_20mb_message_spools_to_disk(make_server):
    server = make_server(settings={"size_threshold": 65536})
    # 20 MiB of numbered lines, some starting with a dot; checksum known in advance.
    lines = []
    size = 0
    i = 0
    while size < 20 * 1024 * 1024:
        l = f"{'.' if i % 97 == 0 else ''}line {i:08d} " + "abcdefghijklmnopqrstuvwxyz0123456789" * 2
        lines.append(l)
        size += len(l) + 2
        i += 1
    msg = make_message("twenty megabytes", lines)
    payload = dot_stuff(msg)
    c = server.connect(timeout=60)
    c.ehlo()
    c.cmd(f"MAIL FROM:<{SENDER}> SIZE={len(msg)}", 250)
    c.cmd(f"RCPT TO:<{RCPT}>", 250)
    c.cmd("DATA", 354)
    first = 2 * 1024 * 1024
    c.send(payload[:first])
    # Past size_threshold the message goes to spool_dir while it is received.
    spooled = wait_for(
        lambda: [p for p in server.spool.iterdir()] if server.spool.is_dir() else [],
        IO_TIMEOUT,
        "a spool file while the message is received",
    )
    assert len(spooled) == 1
    c.send(payload[first:])
    c.expect(250, "2.0.0")
    wait_for(lambda: list(server.spool.iterdir()) == [], IO_TIMEOUT, "the spool dir to be emptied")
    c.cmd("QUIT", 221)
    data = server.maildir.only()
    check_delivered(data, SENDER, [RCPT], msg)
    assert len(msg) >= 20 * 1024 * 1024 and len(data) > len(msg) - msg.count(b"\n")


def test_bdat_chunking_pipelined(server):
    msg = make_message("bdat", [".not stuffed in BDAT", "..", "middle", "." , "last line"])
    # Chunk boundaries fall anywhere: between CR and LF, inside a line, at a line start.
    cr = msg.index(b"\r\nmiddle")
    cuts = [0, 7, cr + 1, cr + 2, cr + 5, len(msg)]
    chunks = [msg[a:b] for a, b in zip(cuts, cuts[1:])]
    batch = b"EHLO bdat.test\r\nMAIL FROM:<sender@client.test>\r\nRCPT TO:<rcpt@example.test>\r\n"
    for ch in chunks[:-1]:
        batch += f"BDAT {len(ch)}\r\n".encode() + ch
    batch += f"BDAT {len(chunks[-1])} LAST\r\n".encode() + chunks[-1] + b"QUIT\r\n"
    c = server.connect()
    c.send(batch)
    replies = parse_replies(c.read_until_closed())
    codes = [r.code for r in replies]
    assert codes[0] == 250 and "CHUNKING" in replies[0].lines
    assert codes == [250, 250, 250] + [250] * len(chunks) + [221], replies
    for ch, r in zip(chunks[:-1], replies[3:]):
        assert r.text == f"2.0.0 {len(ch)} octets received", r
    assert replies[-2].enhanced() == "2.0.0" and "Queued!" in replies[-2].text
    check_delivered(server.maildir.only(), SENDER, [RCPT], msg, helo="bdat.test")


def test_bdat_one_by_one_and_bdat_0_last(server):
    msg = make_message("bdat2", ["chunk " + str(i) for i in range(50)])
    c = server.connect()
    c.ehlo()
    c.cmd(f"MAIL FROM:<{SENDER}>", 250)
    c.cmd(f"RCPT TO:<{RCPT}>", 250)
    for i in range(0, len(msg), 100):
        piece = msg[i : i + 100]
        c.send(f"BDAT {len(piece)}\r\n".encode() + piece)
        c.expect(250, "2.0.0")
    c.cmd("BDAT 0 LAST", 250, "2.0.0")
    # A second transaction in the same session, by DATA this time.
    msg2 = make_message("after bdat", ["second"])
    c.transaction(SENDER, [RCPT], msg2, 250, "2.0.0")
    c.cmd("QUIT", 221)
    files = server.maildir.messages()
    assert len(files) == 2
    [f1] = [f for f in files if b"Subject: bdat2\n" in f]
    [f2] = [f for f in files if b"Subject: after bdat\n" in f]
    check_delivered(f1, SENDER, [RCPT], msg)
    check_delivered(f2, SENDER, [RCPT], msg2)


def test_several_messages_per_session(server):
    msgs = [make_message(f"session msg {i}", [f"body {i}", "." * i]) for i in range(4)]
    with smtp(server) as s:
        for i, m in enumerate(msgs):
            assert s.sendmail(f"s{i}@client.test", [RCPT], m) == {}
            if i == 1:
                assert s.rset()[0] == 250
    files = server.maildir.messages()
    assert len(files) == 4
    for i, m in enumerate(msgs):
        [f] = [f for f in files if f"Subject: session msg {i}\n".encode() in f]
        check_delivered(f, f"s{i}@client.test", [RCPT], m)


def test_several_recipients(server):
    rcpts = ["one@example.test", "two@EXAMPLE.TEST", "three@localhost", "postmaster"]
    msg = make_message("many rcpts", ["to several people"])
    with smtp(server) as s:
        assert s.sendmail(SENDER, rcpts, msg) == {}
    check_delivered(server.maildir.only(), SENDER, rcpts, msg)


def test_null_sender(server):
    msg = make_message("bounce", ["a bounce has the null reverse-path"])
    c = server.connect()
    c.ehlo()
    c.cmd("MAIL FROM:<>", 250, "2.1.0")
    c.cmd(f"RCPT TO:<{RCPT}>", 250)
    c.cmd("DATA", 354)
    c.send(dot_stuff(msg))
    c.expect(250)
    c.cmd("QUIT", 221)
    data = server.maildir.only()
    assert data.startswith(b"Return-Path: <>\n")


def test_helo_gives_smtp_protocol(server):
    msg = make_message("helo", ["old client"])
    c = server.connect()
    c.cmd("HELO old.test", 250, enhanced=False)
    c.transaction(SENDER, [RCPT], msg, 250)
    c.cmd("QUIT", 221)
    check_delivered(server.maildir.only(), SENDER, [RCPT], msg, proto="SMTP", helo="old.test")


def test_many_concurrent_sessions(server):
    """50 clients at once, 4 messages each, on the default 2 workers."""
    errors = []

    def client(n):
        try:
            with smtp(server) as s:
                for k in range(4):
                    m = make_message(f"concurrent {n}-{k}", [f"client {n} message {k}"])
                    assert s.sendmail(f"c{n}@client.test", [RCPT], m) == {}
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append((n, repr(e)))

    threads = [threading.Thread(target=client, args=(n,), daemon=True) for n in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
        assert not t.is_alive(), "a client hung"
    assert not errors, errors[:5]
    files = server.maildir.messages()
    assert len(files) == 200
    subjects = sorted(f.split(b"Subject: ", 1)[1].split(b"\n", 1)[0] for f in files)
    assert subjects == sorted(f"concurrent {n}-{k}".encode() for n in range(50) for k in range(4))
