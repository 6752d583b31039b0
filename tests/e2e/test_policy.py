"""qpsmtpd's connection and envelope policy plugins, end to end, with real clients over loopback:

1. qpsmtpd's typical production plugin list loads (--check) and behaves as qpsmtpd's docs say:
   a bad sender, a bad recipient, relaying, an early talker, a normal delivery.
2. hosts_allow: with max_conn_ip N and two workers, the N+1th concurrent connection from one IP
   is refused whichever worker accepted it; another IP is unaffected.
3. earlytalker: 1,000 well-behaved clients waiting for their banner at once all get it after the
   wait, and the server's thread count does not move while they wait.
4. parse_addr_withhelo and dont_require_anglebrackets against the core's path parser.
"""

import email.utils
import pathlib
import re
import resource
import selectors
import smtplib
import socket
import time

import pytest

from conftest import IO_TIMEOUT, Client, Closed, wait_for

SENDER = "sender@client.test"
RCPT = "rcpt@example.test"

# The blocking pool of each worker: `BLOCKING_THREADS` in src/runtime.rs (monoio's
# DefaultThreadPool starts them all with the runtime). The process has the main thread (which
# waits for signals), one thread per worker, and that pool per worker; nothing else.
BLOCKING_THREADS = 4


def expected_threads(workers):
    # The main thread, the embedded state store's thread, and each worker with its blocking pool.
    return 2 + workers + workers * BLOCKING_THREADS


def thread_count(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("Threads:"):
            return int(line.split()[1])
    raise AssertionError("no Threads: line")


def thread_names(pid):
    """The names of the process's threads (for a readable failure)."""
    names = []
    for task in sorted(pathlib.Path(f"/proc/{pid}/task").iterdir()):
        try:
            names.append((task / "comm").read_text().strip())
        except FileNotFoundError:
            pass  # the thread ended meanwhile
    return names


class ClientFrom(Client):
    """conftest's raw client, with the socket bound to a chosen loopback source address."""

    def __init__(self, port, source, timeout=IO_TIMEOUT):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout, source_address=(source, 0))
        self.sock.settimeout(timeout)
        self.buf = b""

    def local_port(self):
        return self.sock.getsockname()[1]


def message(subject, date=True):
    head = [f"From: <{SENDER}>", f"To: <{RCPT}>", f"Subject: {subject}", f"Message-ID: <{subject}@client.test>"]
    if date:
        head.append(f"Date: {email.utils.formatdate(localtime=True)}")
    return "\r\n".join(head) + "\r\n\r\nHello.\r\n"


def smtp(port, source="127.0.0.1"):
    s = smtplib.SMTP("127.0.0.1", port, local_hostname="client.test", timeout=IO_TIMEOUT, source_address=(source, 0))
    s.ehlo("client.test")
    return s


# ---------------------------------------------------------------------------------------------
# 1. qpsmtpd's production list

def shipped_plugins():
    """The shipped config/plugins (qpsmtpd's typical production list), its Maildir moved."""
    root = pathlib.Path(__file__).resolve().parents[2]
    lines = (root / "config" / "plugins").read_text().splitlines()
    lines = [l.strip() for l in lines if l.strip() and not l.strip().startswith("#")]
    return [l.replace("./Maildir", "{maildir}") for l in lines]


PRODUCTION = shipped_plugins()
assert PRODUCTION == [
    "hosts_allow max_conn_ip 20",
    "earlytalker",
    "relay",
    "badmailfrom reject naughty",
    "badrcptto",
    "rcpt_ok",
    "headers require From,Date future 2 past 15",
    "naughty reject data",
    "queue/maildir {maildir}",
], "the test below is written for this list"

PRODUCTION_FILES = {
    "relayclients": "# our submission host\n127.0.0.2",
    "badmailfrom": "spammer@bad.test\n@spam.test   No mail from spam.test, ever",
    "badrcptto": "olduser@example.test",
    "hosts_allow": "127.0.0.3   DENY   Go away",
}


def test_production_list_checks_and_behaves(make_server):
    srv = make_server(start=False, plugins=PRODUCTION, settings=PRODUCTION_FILES)
    r = srv.check_config()
    assert r.returncode == 0, r.stderr
    chains = dict(re.findall(r"^  (\S+)\s+(.+)$", r.stdout, re.M))
    assert chains == {
        "pre-connection": "hosts_allow",
        "connect": "earlytalker -> relay",
        "mail": "badmailfrom",
        "rcpt": "badrcptto -> rcpt_ok",
        "data": "naughty",
        "data_post": "headers -> naughty",
        "queue": "queue/maildir",
    }, r.stdout
    srv.start()

    # A normal client delivers; its banner came only after earlytalker's second.
    t0 = time.monotonic()
    s = smtp(srv.port)
    assert time.monotonic() - t0 >= 0.9, "earlytalker did not hold the greeting"
    assert s.sendmail(SENDER, [RCPT], message("normal")) == {}
    s.quit()
    srv.maildir.wait_count(1)

    # A non-relay client may not relay (rcpt_ok).
    s = smtp(srv.port)
    with pytest.raises(smtplib.SMTPRecipientsRefused) as e:
        s.sendmail(SENDER, ["someone@elsewhere.test"], message("relay-denied"))
    code, text = e.value.recipients["someone@elsewhere.test"]
    assert code == 550 and text.startswith(b"5.7.1 ") and b"Relaying denied" in text, (code, text)
    s.quit()

    # A bad recipient is refused (badrcptto), with qpsmtpd's "no such user" words.
    s = smtp(srv.port)
    with pytest.raises(smtplib.SMTPRecipientsRefused) as e:
        s.sendmail(SENDER, ["OldUser@example.test"], message("bad-rcpt"))
    code, text = e.value.recipients["OldUser@example.test"]
    assert code == 550 and text.startswith(b"5.1.1 ") and b"mail to olduser@example.test not accepted here" in text, text
    s.quit()

    # A bad sender, as qpsmtpd's sample config has it (`badmailfrom reject naughty`, `naughty
    # reject data`): MAIL and RCPT pass, DATA is refused with badmailfrom's words and the
    # connection is closed.
    for sender, words in [
        ("spammer@bad.test", b"Your envelope sender is in my badmailfrom list"),
        ("anyone@Spam.Test", b"No mail from spam.test, ever"),
    ]:
        s = smtp(srv.port)
        assert s.mail(sender)[0] == 250
        assert s.rcpt(RCPT)[0] == 250
        code, text = s.docmd("DATA")
        assert code == 554 and words in text, (code, text)
        with pytest.raises(smtplib.SMTPServerDisconnected):
            s.noop()
        s.close()

    # A relay client (relayclients lists 127.0.0.2) may relay.
    s = smtp(srv.port, source="127.0.0.2")
    assert s.sendmail(SENDER, ["someone@elsewhere.test"], message("relayed")) == {}
    s.quit()
    msgs = srv.maildir.wait_count(2)
    assert any(b"Delivered-To: someone@elsewhere.test" in m for m in msgs)

    # headers: a message without Date is refused at the end of DATA.
    s = smtp(srv.port)
    with pytest.raises(smtplib.SMTPDataError) as e:
        s.sendmail(SENDER, [RCPT], message("no-date", date=False))
    assert e.value.smtp_code == 552 and b"Date" in e.value.smtp_error, e.value
    s.quit()

    # An early talker is refused at the greeting and disconnected.
    c = ClientFrom(srv.port, "127.0.0.1")
    t0 = time.monotonic()
    c.send("EHLO early.test\r\n")
    r = c.expect(550, "5.7.1")
    assert "Connecting host started transmitting before SMTP greeting" in r.text
    assert time.monotonic() - t0 >= 0.9
    assert c.read_until_closed() == b""
    c.close()

    # hosts_allow's rule file.
    c = ClientFrom(srv.port, "127.0.0.3")
    r = c.expect(550, "5.7.1")
    assert r.text == "5.7.1 Go away"
    c.close()

    assert len(srv.maildir.messages()) == 2
    srv.wait_log("earlytalker: fail")


# ---------------------------------------------------------------------------------------------
# 2. hosts_allow: the limit counts across workers


def worker_of(srv, port):
    """The worker that accepted the connection from local port `port`: connection ids are
    `(worker + 1) << 40 | n` (src/runtime.rs), and the core logs `connect from IP:PORT`."""
    pat = re.compile(r"^\w+ ([0-9a-f]+) core: connect from 127\.0\.0\.\d+:" + str(port) + r" ", re.M)
    m = wait_for(lambda: pat.search(srv.log()), IO_TIMEOUT, f"the connect line of port {port}")
    return (int(m.group(1), 16) >> 40) - 1


def test_hosts_allow_limit_counts_across_workers(make_server):
    n = 4
    srv = make_server(
        threads=2,
        plugins=[f"hosts_allow max_conn_ip {n}", "rcpt_ok", "queue/maildir {maildir}"],
        # The port's hash spreads the connections over both workers; with `steer` this test's
        # connections, all from one CPU at a time, could all land on one.
        settings={"hosts_allow": "127.0.0.3 DENY Go away", "cpu_affinity": "off"},
    )
    held = []
    for _ in range(n):
        c = ClientFrom(srv.port, "127.0.0.1")
        c.expect(220)
        held.append(c)
    placed = [worker_of(srv, c.local_port()) for c in held]

    # The N+1th from 127.0.0.1 is refused. Try until each worker has refused one: with the held
    # connections split between workers or not, a worker holding fewer than N of them refuses
    # only if the count is the process's, not the worker's.
    refused_on = set()
    for attempt in range(40):
        c = ClientFrom(srv.port, "127.0.0.1")
        r = c.expect(451, "4.7.1")
        assert r.text == "4.7.1 too many connections from 127.0.0.1, try again later", r
        assert c.read_until_closed() == b""
        refused_on.add(worker_of(srv, c.local_port()))
        c.close()
        if refused_on == {0, 1}:
            break
    assert refused_on == {0, 1}, f"refusals seen only on workers {refused_on} (held: {placed})"

    # Another IP is unaffected.
    other = ClientFrom(srv.port, "127.0.0.2")
    other.expect(220)
    other.cmd("EHLO other.test", 250, enhanced=False)
    other.cmd("QUIT", 221)
    other.close()

    # The rules file still applies below the limit.
    c = ClientFrom(srv.port, "127.0.0.3")
    assert c.expect(550, "5.7.1").text == "5.7.1 Go away"
    c.close()

    # Closing one held connection makes room again (once the server has seen it go).
    held.pop().close()

    def admitted():
        c = ClientFrom(srv.port, "127.0.0.1")
        r = c.reply()
        if r.code == 220:
            return c
        c.close()
        time.sleep(0.05)
        return None

    again = wait_for(admitted, IO_TIMEOUT, "a free slot for 127.0.0.1")
    again.cmd("QUIT", 221)
    for c in held + [again]:
        c.close()


# ---------------------------------------------------------------------------------------------
# 3. earlytalker: waiting costs no thread


def test_earlytalker_1000_waiting_clients_cost_no_threads(make_server):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, 20000)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))  # inherited by the server
    clients = 1000
    workers = 2
    srv = make_server(threads=workers, plugins=["earlytalker wait 2", "rcpt_ok", "queue/maildir {maildir}"])
    pid = srv.proc.pid
    expected = expected_threads(workers)
    # The workers start their runtimes (and pools) after "listening on" is logged: let them.
    wait_for(lambda: thread_count(pid) == expected, IO_TIMEOUT, f"{expected} threads ({thread_names(pid)})")
    time.sleep(0.2)
    assert thread_count(pid) == expected, thread_names(pid)

    sel = selectors.DefaultSelector()  # epoll: fd numbers go past select()'s 1024
    socks = {}
    try:
        for i in range(clients):
            s = socket.create_connection(("127.0.0.1", srv.port), timeout=IO_TIMEOUT)
            s.setblocking(False)
            socks[s] = {"t": time.monotonic(), "buf": b"", "banner": None}
            sel.register(s, selectors.EVENT_READ)
        # No speed is asserted: each banner is checked against its own connect time below,
        # which a slow machine can only make later, never earlier.
        samples = [thread_count(pid)]

        deadline = time.monotonic() + IO_TIMEOUT
        done = 0
        while done < clients and time.monotonic() < deadline:
            if len(samples) < 50 or done < clients // 2:
                samples.append(thread_count(pid))
            for key, _ in sel.select(timeout=0.5):
                s = key.fileobj
                st = socks[s]
                try:
                    chunk = s.recv(4096)
                except BlockingIOError:
                    continue
                if not chunk:
                    pytest.fail(f"connection closed before its banner: {st['buf']!r}")
                st["buf"] += chunk
                if b"\r\n" in st["buf"]:
                    st["banner"] = (time.monotonic() - st["t"], st["buf"].split(b"\r\n", 1)[0])
                    sel.unregister(s)
                    done += 1
        assert done == clients, f"only {done} of {clients} banners arrived"
        waits = [st["banner"][0] for st in socks.values()]
        banners = {st["banner"][1][:4] for st in socks.values()}
        assert banners == {b"220 "}, banners
        assert min(waits) >= 1.95, f"a banner came after {min(waits):.3f}s, before the 2 s wait"
        assert set(samples) == {expected}, (
            f"thread count moved while 1000 clients waited: {sorted(set(samples))}, "
            f"expected {expected} = 1 main + {workers} workers + {workers}x{BLOCKING_THREADS} blocking; "
            f"threads now: {thread_names(pid)}"
        )
    finally:
        for s in socks:
            s.close()
        sel.close()

    # And an early talker among them would still be caught.
    c = ClientFrom(srv.port, "127.0.0.1")
    c.send("HELO early.test\r\n")
    assert "before SMTP greeting" in c.expect(550).text
    c.close()
    assert thread_count(pid) == expected


# ---------------------------------------------------------------------------------------------
# 4. The path plugins against the core's parser


def test_angle_bracket_plugins(make_server):
    srv = make_server(plugins=["parse_addr_withhelo", "rcpt_ok", "queue/maildir {maildir}"])
    c = srv.connect()
    c.cmd("HELO old.test", 250, enhanced=False)
    # The core refuses parameters after HELO before any plugin runs.
    c.cmd(f"MAIL FROM:<{SENDER}> SIZE=10", 555, "5.5.4")
    c.cmd("MAIL FROM:junk", 501, "5.5.2")
    # After HELO a bare address is taken, as qpsmtpd's RFC 821 parser did.
    assert f"<{SENDER}>" in c.cmd(f"MAIL FROM:{SENDER}", 250).text
    assert f"<{RCPT}>" in c.cmd(f"RCPT TO:{RCPT}", 250).text
    c.cmd("RSET", 250)
    # After EHLO the plugin stands aside: the core wants the brackets.
    c.cmd("EHLO new.test", 250, enhanced=False)
    c.cmd(f"MAIL FROM:{SENDER}", 501)
    c.cmd("QUIT", 221)
    c.close()

    srv2 = make_server(plugins=["dont_require_anglebrackets", "rcpt_ok", "queue/maildir {maildir}"])
    s = smtplib.SMTP("127.0.0.1", srv2.port, local_hostname="client.test", timeout=IO_TIMEOUT)
    s.ehlo("client.test")
    assert s.docmd(f"MAIL FROM:{SENDER}")[0] == 250
    assert s.docmd(f"RCPT TO:{RCPT}")[0] == 250
    assert s.docmd("RCPT TO:no-domain")[0] == 501  # brackets added, then the parser refuses it
    code, _ = s.data(message("bare"))
    assert code == 250
    s.quit()
    msg = srv2.maildir.wait_count(1)[0]
    assert msg.startswith(f"Return-Path: <{SENDER}>\nDelivered-To: {RCPT}\n".encode()), msg[:200]
