"""Hostile and broken clients: SMTP smuggling probes, bare CR/LF, NUL, over-long lines,
oversize messages, commands out of order, clients that vanish or stall, PROXY headers."""

import socket
import struct
import time

import pytest

from conftest import IO_TIMEOUT, Closed, check_delivered, dot_stuff, make_message, parse_replies, wait_for

SENDER = "sender@client.test"
RCPT = "rcpt@example.test"
OPEN = b"EHLO probe.test\r\nMAIL FROM:<sender@client.test>\r\nRCPT TO:<rcpt@example.test>\r\nDATA\r\n"
SMUGGLED = (
    b"MAIL FROM:<smuggled@evil.test>\r\n"
    b"RCPT TO:<victim@example.test>\r\n"
    b"DATA\r\n"
    b"Subject: smuggled\r\n\r\nsmuggled body\r\n.\r\n"
    b"QUIT\r\n"
)


def assert_bare_newline_close(client, data_before=b""):
    """The rest of the conversation is one 521 5.5.2, then the server closes."""
    rest = client.read_until_closed()
    replies = parse_replies(data_before + rest)
    assert replies, "no reply before the close"
    last = replies[-1]
    assert last.code == 521 and last.enhanced() == "5.5.2", replies
    return replies


# ---------------------------------------------------------------------------------------------
# SMTP smuggling (smtpsmug-style): a second message hidden after a non-CRLF end of data.


@pytest.mark.parametrize(
    "probe",
    [b"\n.\n", b"\n.\r\n", b"\r.\r\n", b"\r\n.\r", b"\r\n.\n", b"\r\n\n.\r\n", b"\r\n.\r\r\n"],
    ids=["LF.LF", "LF.CRLF", "CR.CRLF", "CRLF.CR", "CRLF.LF", "CRLF-LF.CRLF", "CRLF.CR-CRLF"],
)
def test_smuggling_probe_in_data(server, probe):
    c = server.connect()
    c.send(OPEN)
    c.expect(250, enhanced=False)
    c.expect(250)
    c.expect(250)
    c.expect(354)
    c.send(b"Subject: first\r\n\r\nfirst body" + probe + SMUGGLED)
    replies = assert_bare_newline_close(c)
    # The pipelined MAIL after the smuggled dot was never executed: the 521 is the only reply.
    assert [r.code for r in replies] == [521], replies
    server.wait_log("BareNewline")
    assert "smuggled@evil.test" not in server.log()
    server.maildir.assert_empty()


def test_smuggling_probe_split_over_writes(server):
    """The same probe with the bytes arriving one by one."""
    c = server.connect()
    c.send(OPEN)
    for code in (250, 250, 250, 354):
        c.expect(code, enhanced=False if code == 250 else None)
    c.send(b"Subject: first\r\n\r\nfirst body")
    for b in b"\n.\n" + SMUGGLED[:40]:
        try:
            c.send(bytes([b]))
        except (BrokenPipeError, ConnectionResetError):
            break
        time.sleep(0.002)
    replies = assert_bare_newline_close(c)
    assert [r.code for r in replies] == [521], replies
    server.maildir.assert_empty()


def test_bare_lf_in_command(server):
    c = server.connect()
    c.send(b"EHLO probe.test\nMAIL FROM:<sender@client.test>\r\nNOOP\r\n")
    replies = assert_bare_newline_close(c)
    assert [r.code for r in replies] == [521], replies


def test_bare_lf_after_good_commands(server):
    c = server.connect()
    c.ehlo()
    c.cmd(f"MAIL FROM:<{SENDER}>", 250)
    c.send(b"RCPT TO:<rcpt@example.test>\nDATA\r\n")
    replies = assert_bare_newline_close(c)
    assert [r.code for r in replies] == [521], replies
    server.maildir.assert_empty()


def test_bare_cr_in_command(server):
    c = server.connect()
    c.ehlo()
    c.send(b"NOOP\rMAIL FROM:<sender@client.test>\r\nNOOP\r\n")
    r = c.reply()
    assert r.code == 521 and r.enhanced() == "5.5.2", r
    assert c.read_until_closed() == b""


def test_bare_cr_in_command_never_executes_the_hidden_command(server):
    """Whatever the reply to a bare CR in a command, the text after it is not a command."""
    c = server.connect()
    c.ehlo()
    c.send(b"RSET\rMAIL FROM:<hidden@evil.test>\r\nRCPT TO:<rcpt@example.test>\r\n")
    r = c.reply()
    assert r.code in (500, 521) and r.enhanced() == "5.5.2", r
    if r.code == 500:
        # The RCPT must fail: no MAIL was executed.
        c.expect(503, "5.5.1")
    assert "hidden@evil.test" not in server.log()


@pytest.mark.parametrize("tail", [b"\r\n.\r\n", b""], ids=["then-end", "then-nothing"])
def test_bare_cr_and_lf_inside_data_lines(server, tail):
    for bad in (b"one\rtwo", b"one\ntwo"):
        c = server.connect()
        c.send(OPEN)
        c.reply(), c.reply(), c.reply(), c.expect(354)
        c.send(b"Subject: x\r\n\r\n" + bad + b"\r\nmore\r\n" + tail)
        replies = assert_bare_newline_close(c)
        assert [r.code for r in replies] == [521], replies
    server.maildir.assert_empty()


def test_accept_normalize_never_ends_data_at_bare_newline(make_server):
    server = make_server(settings={"bare_newline": "accept-normalize"})
    c = server.connect()
    c.send(OPEN)
    c.reply(), c.reply(), c.reply(), c.expect(354)
    c.send(b"Subject: first\r\n\r\nfirst body\n.\n" + SMUGGLED)
    # Everything up to the real CRLF.CRLF is one message; QUIT follows it.
    c.expect(250, "2.0.0")
    c.expect(221)
    files = server.maildir.messages()
    assert len(files) == 1, "the smuggled message was delivered separately"
    assert b"MAIL FROM:<smuggled@evil.test>" in files[0]
    assert b"first body\n.\nMAIL FROM:<smuggled@evil.test>\n" in files[0]


def test_accept_normalize_bare_lf_commands(make_server):
    server = make_server(settings={"bare_newline": "accept-normalize"})
    msg = make_message("lf", ["body"])
    c = server.connect()
    c.send(b"EHLO lf.test\nMAIL FROM:<sender@client.test>\nRCPT TO:<rcpt@example.test>\nDATA\n")
    c.expect(250, enhanced=False), c.expect(250), c.expect(250), c.expect(354)
    c.send(dot_stuff(msg))
    c.expect(250)
    c.cmd("QUIT", 221)
    check_delivered(server.maildir.only(), SENDER, [RCPT], msg)


# ---------------------------------------------------------------------------------------------
# Command-level garbage


def test_nul_byte_in_command(server):
    c = server.connect()
    c.ehlo()
    c.send(b"NOOP\x00\r\n")
    c.expect(500, "5.5.2")
    c.send(b"MAIL FROM:<sender@client.test>\x00 SIZE=10\r\n")
    c.expect(500, "5.5.2")
    c.cmd("NOOP", 250)  # the session goes on
    c.cmd("QUIT", 221)


def test_overlong_command_line(server):
    c = server.connect()
    c.ehlo()
    c.send(b"MAIL FROM:<" + b"a" * 1000 + b"@client.test>\r\n")
    c.expect(500, "5.5.2")
    c.send(b"NOOP " + b"x" * 100_000 + b"\r\n")  # far beyond one read buffer
    c.expect(500, "5.5.2")
    c.cmd("NOOP", 250)
    # The tail of the long line was not taken for a command.
    c.cmd(f"MAIL FROM:<{SENDER}>", 250)
    c.cmd("QUIT", 221)


def test_max_line_length_boundary(server):
    c = server.connect()
    c.ehlo()
    ok = b"NOOP " + b"y" * (512 - 7) + b"\r\n"  # exactly 512 octets with CRLF
    assert len(ok) == 512
    c.send(ok)
    c.expect(250)
    c.send(b"NOOP " + b"y" * (512 - 6) + b"\r\n")
    c.expect(500, "5.5.2")
    c.cmd("QUIT", 221)


def test_overlong_data_line(make_server):
    server = make_server(settings={"data_line_length": 1000})
    c = server.connect()
    c.send(OPEN)
    c.reply(), c.reply(), c.reply(), c.expect(354)
    c.send(b"Subject: x\r\n\r\n" + b"z" * 5000 + b"\r\n.\r\n")
    rest = c.read_until_closed()
    replies = parse_replies(rest)
    assert replies and replies[0].code == 552 and replies[0].enhanced() == "5.3.4", replies
    server.maildir.assert_empty()


def test_unknown_commands_then_too_many(server):
    c = server.connect()
    c.ehlo()
    codes = []
    try:
        for i in range(30):
            c.send(f"XYZZY{i}\r\n")
            r = c.reply()
            codes.append((r.code, r.enhanced()))
            if r.code == 421:
                break
    except Closed:
        pass
    assert codes[0] == (500, "5.5.1")
    assert codes[-1] == (421, "4.7.0"), codes
    c.read_until_closed()


def test_too_many_recipients(make_server):
    server = make_server(settings={"max_rcpts": 3})
    msg = make_message("max rcpts", ["x"])
    c = server.connect()
    c.ehlo()
    c.cmd(f"MAIL FROM:<{SENDER}>", 250)
    for i in range(3):
        c.cmd(f"RCPT TO:<r{i}@example.test>", 250)
    c.cmd("RCPT TO:<r3@example.test>", 452, "4.5.3")
    c.cmd("DATA", 354)
    c.send(dot_stuff(msg))
    c.expect(250)
    c.cmd("QUIT", 221)
    check_delivered(server.maildir.only(), SENDER, [f"r{i}@example.test" for i in range(3)], msg)


def test_misc_verbs(server):
    c = server.connect()
    r = c.ehlo()
    assert not any(l.startswith(("STARTTLS", "AUTH")) for l in r.lines), r
    c.cmd("NOOP", 250, "2.0.0")
    c.cmd("NOOP with an argument", 250, "2.0.0")
    r = c.cmd("HELP", 214, "2.0.0")
    assert len(r.lines) > 1
    c.cmd("VRFY rcpt@example.test", 252, "2.1.5")
    # Not offered without the tls / auth plugins: a permanent refusal, never a 2xx or 4xx.
    for line in ("STARTTLS", "AUTH PLAIN AGVhAGI="):
        r = c.cmd(line)
        assert r.code in (500, 502, 503, 504) and r.enhanced().startswith("5."), (line, r)
    c.cmd("rset", 250, "2.0.0")  # verbs are case-insensitive
    # A second EHLO ends the open transaction (RFC 5321 4.1.4).
    c.cmd(f"MAIL FROM:<{SENDER}>", 250)
    c.ehlo("again.test")
    c.cmd(f"RCPT TO:<{RCPT}>", 503, "5.5.1")
    c.cmd("QUIT", 221)
    c.read_until_closed()


def test_bare_lf_inside_bdat_refuses_the_message_only(server):
    c = server.connect()
    c.ehlo()
    c.cmd(f"MAIL FROM:<{SENDER}>", 250)
    c.cmd(f"RCPT TO:<{RCPT}>", 250)
    chunk = b"Subject: bdat lf\r\n\r\nline\n.\nMAIL FROM:<smuggled@evil.test>\r\n"
    c.send(f"BDAT {len(chunk)} LAST\r\n".encode() + chunk)
    r = c.reply()
    assert r.code == 554 and r.enhanced() == "5.6.0", r
    # Counted framing: no ambiguity about where the chunk ended, so the session goes on.
    msg = make_message("after bdat lf", ["ok"])
    c.cmd(f"MAIL FROM:<{SENDER}>", 250)
    c.cmd(f"RCPT TO:<{RCPT}>", 250)
    c.send(f"BDAT {len(msg)} LAST\r\n".encode() + msg)
    c.expect(250, "2.0.0")
    c.cmd("QUIT", 221)
    check_delivered(server.maildir.only(), SENDER, [RCPT], msg)
    assert "smuggled@evil.test" not in server.log()


# ---------------------------------------------------------------------------------------------
# Message size


def test_oversize_message_refused_after_final_dot(make_server):
    server = make_server(settings={"databytes": 10000})
    c = server.connect()
    r = c.ehlo()
    assert "SIZE 10000" in r.lines
    c.start_data(SENDER, [RCPT])
    big = make_message("big", ["x" * 70 for _ in range(300)])
    assert len(big) > 10000
    c.send(dot_stuff(big)[:-5])
    c.send(b"\r\n.\r\n")
    c.expect(552, "5.3.4")
    # The session goes on; a small message still goes through.
    small = make_message("small", ["ok"])
    c.transaction(SENDER, [RCPT], small, 250)
    c.cmd("QUIT", 221)
    check_delivered(server.maildir.only(), SENDER, [RCPT], small)


def test_databytes_boundary(make_server):
    server = make_server(settings={"databytes": 10000})
    head = b"Subject: boundary\r\n\r\n"
    results = {}
    for n in (9999, 10000, 10001):
        c = server.connect()
        c.ehlo()
        msg = head + b"y" * (n - len(head) - 2) + b"\r\n"
        assert len(msg) == n
        r = c.transaction(SENDER, [RCPT], msg)
        results[n] = (r.code, r.enhanced())
        c.cmd("QUIT", 221)
    assert results == {9999: (250, "2.0.0"), 10000: (250, "2.0.0"), 10001: (552, "5.3.4")}
    assert len(server.maildir.messages()) == 2


def test_oversize_spooled_message_leaves_nothing(make_server):
    server = make_server(settings={"databytes": 200000, "size_threshold": 65536})
    c = server.connect()
    c.send(OPEN)
    c.reply(), c.reply(), c.reply(), c.expect(354)
    c.send(b"Subject: x\r\n\r\n" + (b"z" * 98 + b"\r\n") * 5000 + b".\r\n")
    c.expect(552, "5.3.4")
    c.cmd("QUIT", 221)
    server.maildir.assert_empty()
    # Spool files are unlinked off the worker, by the spool reaper: soon, not necessarily yet.
    wait_for(lambda: list(server.spool.iterdir()) == [], IO_TIMEOUT, "the spool dir to be emptied")


def test_databytes_zero_means_no_limit(make_server):
    server = make_server(settings={"databytes": 0})
    c = server.connect()
    assert "SIZE" in c.ehlo().lines
    c.cmd(f"MAIL FROM:<{SENDER}> SIZE=999999999999", 250)
    c.cmd("QUIT", 221)


def test_oversize_declared_at_mail(make_server):
    server = make_server(settings={"databytes": 10000})
    c = server.connect()
    c.ehlo()
    c.cmd(f"MAIL FROM:<{SENDER}> SIZE=10001", 552, "5.3.4")
    c.cmd(f"MAIL FROM:<{SENDER}> SIZE=10000", 250)
    c.cmd("QUIT", 221)


def test_oversize_bdat(make_server):
    server = make_server(settings={"databytes": 10000})
    c = server.connect()
    c.ehlo()
    c.cmd(f"MAIL FROM:<{SENDER}>", 250)
    c.cmd(f"RCPT TO:<{RCPT}>", 250)
    big = make_message("big", ["x" * 70 for _ in range(300)])
    c.send(f"BDAT {len(big)} LAST\r\n".encode() + big)
    c.expect(552, "5.3.4")
    c.cmd("QUIT", 221)
    server.maildir.assert_empty()


# ---------------------------------------------------------------------------------------------
# Commands out of order


def test_commands_out_of_order(server):
    c = server.connect()
    c.cmd(f"MAIL FROM:<{SENDER}>", 503, "5.5.1")  # before EHLO
    c.ehlo()
    c.cmd(f"RCPT TO:<{RCPT}>", 503, "5.5.1")  # before MAIL
    c.cmd("DATA", 503, "5.5.1")  # before MAIL
    c.send(b"BDAT 5\r\nhello")  # before MAIL: refused, the 5 octets dropped
    c.expect(503, "5.5.1")
    c.cmd(f"MAIL FROM:<{SENDER}>", 250)
    c.cmd(f"MAIL FROM:<{SENDER}>", 503, "5.5.1")  # nested
    c.cmd("DATA", 503, "5.5.1")  # before RCPT
    c.cmd("RCPT TO:<foreign@elsewhere.invalid>", 550, "5.7.1")
    c.cmd("DATA", 503, "5.5.1")  # still no accepted RCPT
    c.cmd(f"RCPT TO:<{RCPT}>", 250)
    c.send(b"BDAT 3\r\nabc")
    c.expect(250)
    c.cmd("DATA", 503, "5.5.1")  # DATA after BDAT
    c.cmd("RSET", 250, "2.0.0")
    c.cmd(f"RCPT TO:<{RCPT}>", 503, "5.5.1")  # RSET ended the transaction
    c.cmd("DATA extra", 501, "5.5.4")
    c.cmd("MAIL TO:<x@y>", 501, "5.5.4")
    c.cmd("QUIT now", 501, "5.5.4")
    # A full transaction still works after all that.
    msg = make_message("after errors", ["fine"])
    c.transaction(SENDER, [RCPT], msg, 250)
    c.cmd("QUIT", 221)
    check_delivered(server.maildir.only(), SENDER, [RCPT], msg)


# ---------------------------------------------------------------------------------------------
# Clients that vanish or stall


@pytest.mark.parametrize("size", [2000, 3 * 1024 * 1024], ids=["small", "spooled"])
def test_client_disconnects_mid_data(make_server, size):
    server = make_server(settings={"size_threshold": 65536})
    c = server.connect()
    c.send(OPEN)
    c.reply(), c.reply(), c.reply(), c.expect(354)
    c.send(b"Subject: cut\r\n\r\n" + b"y" * 99 + (b"\r\n" + b"y" * 98) * (size // 100))
    if size > 65536:
        wait_for(lambda: list(server.spool.iterdir()), IO_TIMEOUT, "the spool file")
    c.close()
    server.wait_log("ClientClosed")
    server.maildir.assert_empty()
    wait_for(lambda: list(server.spool.iterdir()) == [], IO_TIMEOUT, "the spool dir to be emptied")
    # The server is fine afterwards.
    c2 = server.connect()
    c2.ehlo()
    c2.cmd("QUIT", 221)


def test_client_disconnects_mid_bdat(server):
    c = server.connect()
    c.ehlo()
    c.cmd(f"MAIL FROM:<{SENDER}>", 250)
    c.cmd(f"RCPT TO:<{RCPT}>", 250)
    c.send(b"BDAT 10\r\n0123456789")
    c.expect(250)
    c.send(b"BDAT 100 LAST\r\nonly part of it")
    c.close()
    server.wait_log("ClientClosed")
    server.maildir.assert_empty()


def test_client_stalls_mid_bdat_times_out(make_server):
    server = make_server(settings={"timeout": 1})
    c = server.connect()
    c.ehlo()
    c.cmd(f"MAIL FROM:<{SENDER}>", 250)
    c.cmd(f"RCPT TO:<{RCPT}>", 250)
    c.send(b"BDAT 1000 LAST\r\nonly a few octets")
    r = c.reply()
    assert r.code == 421 and r.enhanced() == "4.4.2", r
    c.read_until_closed()
    server.maildir.assert_empty()


def test_idle_client_times_out(make_server):
    server = make_server(settings={"timeout": 1})
    c = server.connect()
    c.ehlo()
    start = time.monotonic()
    r = c.reply()  # nothing sent: the next thing the server says is the timeout
    assert r.code == 421 and r.enhanced() == "4.4.2", r
    assert time.monotonic() - start >= 0.9
    c.read_until_closed()


def test_slow_client_times_out_mid_data(make_server):
    server = make_server(settings={"timeout": 1})
    c = server.connect()
    c.send(OPEN)
    c.reply(), c.reply(), c.reply(), c.expect(354)
    c.send(b"Subject: slow\r\n\r\nstarted but never finished\r\n")
    r = c.reply()
    assert r.code == 421 and r.enhanced() == "4.4.2", r
    c.read_until_closed()
    server.wait_log("Timeout")
    server.maildir.assert_empty()


def test_client_silent_before_banner_read_is_fine(server):
    """A client that sends nothing at all until the timeout is the idle case; one that sends
    QUIT without reading the banner is served."""
    c = server.connect(banner=False)
    c.send(b"QUIT\r\n")
    c.expect(220)
    c.expect(221)


# ---------------------------------------------------------------------------------------------
# PROXY protocol listener


def proxy_conn(server):
    s = socket.create_connection(("127.0.0.1", server.proxy_port), timeout=IO_TIMEOUT)
    return s


def read_all(sock, deadline=IO_TIMEOUT):
    sock.settimeout(deadline)
    data = b""
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        try:
            chunk = sock.recv(65536)
        except (ConnectionResetError, BrokenPipeError):
            return data
        if not chunk:
            return data
        data += chunk
    pytest.fail(f"connection not closed; got {data!r}")


@pytest.mark.parametrize(
    "garbage,half_close",
    [
        (b"EHLO client.test\r\n", False),
        (b"GET / HTTP/1.0\r\n\r\n", False),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n", False),  # bare LF
        (b"PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n", False),
        (b"PROXY TCP4 1.2.3.400 5.6.7.8 1 2\r\n", False),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n", False),
        (b"PROXY TCP4 1.2.3.4 " + b"9" * 200 + b"\r\n", False),
        (b"\r\n\r\n\x00\r\nQUIT\n\x31\x11\x00\x0c", False),  # v2 version 3
        (b"\r\n\r\n\x00\r\nQUIT\n\x21\x11\xff\xff" + b"\x00" * 64, False),  # v2 too long
        (b"PROXY TCP4 192.0.2.1 ", True),  # truncated v1, then EOF
        (b"\r\n\r\n\x00\r\nQUIT\n\x21\x11\x00\x0c\xc0\x00", True),  # truncated v2, then EOF
        (b"", True),  # nothing at all
    ],
    ids=[
        "smtp", "http", "v1-bare-lf", "v1-bad-proto", "v1-bad-ip", "v1-leading-zero",
        "v1-too-long", "v2-bad-version", "v2-too-long", "v1-truncated", "v2-truncated", "empty",
    ],
)
def test_proxy_listener_refuses_garbage(make_server, garbage, half_close):
    server = make_server(proxy=True)
    s = proxy_conn(server)
    if garbage:
        s.sendall(garbage)
    if half_close:
        s.shutdown(socket.SHUT_WR)
    data = read_all(s)
    assert data == b"", f"the server spoke on a PROXY listener without a valid header: {data!r}"
    server.wait_log("PROXY header from")
    s.close()


def deliver_via_proxy(server, header, subject):
    msg = make_message(subject, ["through a load balancer"])
    s = proxy_conn(server)
    s.sendall(header)
    c = server.connect(banner=False)
    c.sock.close()
    c.sock = s
    c.expect(220)
    c.ehlo()
    c.transaction(SENDER, [RCPT], msg, 250)
    c.cmd("QUIT", 221)
    [f] = [f for f in server.maildir.messages() if f"Subject: {subject}\n".encode() in f]
    return f, msg


def test_proxy_v1_sets_client_ip(make_server):
    server = make_server(proxy=True)
    f, msg = deliver_via_proxy(server, b"PROXY TCP4 198.51.100.22 203.0.113.1 35646 25\r\n", "v1")
    check_delivered(f, SENDER, [RCPT], msg, ip="198.51.100.22")


def test_proxy_v1_tcp6_sets_client_ip(make_server):
    server = make_server(proxy=True)
    f, msg = deliver_via_proxy(server, b"PROXY TCP6 2001:db8::7 2001:db8::1 35646 25\r\n", "v1six")
    check_delivered(f, SENDER, [RCPT], msg, ip="2001:db8::7")


def test_proxy_v2_sets_client_ip(make_server):
    server = make_server(proxy=True)
    addrs = socket.inet_aton("203.0.113.9") + socket.inet_aton("192.0.2.25") + struct.pack("!HH", 40000, 25)
    tlv = b"\x04\x00\x03abc"  # a NOOP TLV, to be skipped
    block = addrs + tlv
    header = b"\r\n\r\n\x00\r\nQUIT\n" + bytes([0x21, 0x11]) + struct.pack("!H", len(block)) + block
    f, msg = deliver_via_proxy(server, header, "v2")
    check_delivered(f, SENDER, [RCPT], msg, ip="203.0.113.9")


def test_proxy_v1_unknown_and_v2_local_keep_the_real_address(make_server):
    server = make_server(proxy=True)
    f, msg = deliver_via_proxy(server, b"PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n", "unknown")
    check_delivered(f, SENDER, [RCPT], msg, ip="127.0.0.1")
    local = b"\r\n\r\n\x00\r\nQUIT\n" + bytes([0x20, 0x00]) + struct.pack("!H", 0)
    f, msg = deliver_via_proxy(server, local, "local")
    check_delivered(f, SENDER, [RCPT], msg, ip="127.0.0.1")


def test_proxy_header_with_pipelined_smtp_in_same_write(make_server):
    server = make_server(proxy=True)
    msg = make_message("same write", ["x"])
    s = proxy_conn(server)
    s.sendall(
        b"PROXY TCP4 198.51.100.77 203.0.113.1 1234 25\r\n" + OPEN + dot_stuff(msg) + b"QUIT\r\n"
    )
    replies = parse_replies(read_all(s))
    assert [r.code for r in replies] == [220, 250, 250, 250, 354, 250, 221], replies
    check_delivered(server.maildir.only(), SENDER, [RCPT], msg, ip="198.51.100.77")


def test_plain_listener_beside_proxy_listener(make_server):
    server = make_server(proxy=True)
    c = server.connect()
    c.ehlo()
    c.cmd("QUIT", 221)
