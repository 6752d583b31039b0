"""Overload: `max_connections` admits N connections, answers the next `421 4.3.2` and closes
it, logs the refusals once per interval, and silent clients cannot hold their places forever.
(bench/overload measures the same under an open-loop load at twice the capacity.)"""

from conftest import IO_TIMEOUT, Client, make_message, parse_replies, wait_for

SENDER = "sender@client.test"
RCPT = "rcpt@example.test"
LIMIT = 3
LOG_LINE = "connection limit reached (max_connections 3)"


def expect_refused(data):
    """`data`, everything a refused client read before the close, is exactly one 421 4.3.2."""
    replies = parse_replies(data)
    assert len(replies) == 1, replies
    r = replies[0]
    assert r.code == 421 and r.enhanced() == "4.3.2", r
    assert "Too many connections" in r.text, r


def refused_client(server, port=None, first=b""):
    """Connects (sending `first` at once, as a load balancer sends its PROXY header) and
    returns everything read until the server closes."""
    c = Client(port or server.port)
    try:
        if first:
            c.send(first)
        return c.read_until_closed()
    finally:
        c.close()


def admitted(server):
    """True if a new connection gets the 220 banner now."""
    c = Client(server.port)
    try:
        return c.reply().code == 220
    except Exception:
        return False
    finally:
        c.close()


def test_connection_over_the_limit_gets_421_and_the_first_n_are_served(make_server):
    server = make_server(settings={"max_connections": LIMIT}, threads=2)
    held = [server.connect() for _ in range(LIMIT)]  # each got its 220
    refusals = 4
    for _ in range(refusals):
        expect_refused(refused_client(server))
    # The admitted sessions are served as usual, after the refusals.
    for i, c in enumerate(held):
        c.ehlo()
        msg = make_message(f"held {i}", ["kept its place"])
        c.transaction(SENDER, [RCPT], msg, 250)
    server.maildir.wait_count(LIMIT)
    # Refusals are logged, not once per connection: the first at once, the rest counted.
    server.wait_log(LOG_LINE)
    log = server.log()
    assert "1 connection(s) refused with 421 4.3.2" in log, log[-2000:]
    assert log.count(LOG_LINE) < refusals, log[-2000:]
    # A place freed by a closed session is given to the next client.
    held[0].cmd("QUIT", 221)
    held[0].read_until_closed()
    held[0].close()
    wait_for(lambda: admitted(server), IO_TIMEOUT, "a connection admitted once a place is free")
    for c in held[1:]:
        c.cmd("QUIT", 221)
        c.close()


def test_refusal_reaches_a_client_that_sent_first(make_server):
    """A PROXY listener's load balancer sends its header at once: the refusal must still reach
    it as a 421 (closing with the header unread would reset the connection)."""
    server = make_server(settings={"max_connections": 1}, proxy=True)
    held = server.connect()
    header = b"PROXY TCP4 192.0.2.7 127.0.0.1 4000 25\r\nEHLO lb.test\r\n"
    for _ in range(3):
        expect_refused(refused_client(server, server.proxy_port, first=header))
    held.cmd("QUIT", 221)
    held.close()


def test_silent_clients_cannot_hold_the_places(make_server):
    """Clients that connect and never speak are closed at `timeout` with 421 4.4.2, and their
    places go to new clients: a silent flood cannot pin connections or fds forever."""
    server = make_server(settings={"max_connections": 2, "timeout": 1})
    silent = [server.connect() for _ in range(2)]  # banner read, then never a word
    try:
        expect_refused(refused_client(server))
        for c in silent:
            replies = parse_replies(c.read_until_closed())
            assert [(r.code, r.enhanced()) for r in replies] == [(421, "4.4.2")], replies
        wait_for(lambda: admitted(server), IO_TIMEOUT, "a new client served once the silent ones timed out")
    finally:
        for c in silent:
            c.close()


def listen_queues(port):
    """[(waiting, backlog)] of the listening sockets on 127.0.0.1:`port` (`ss`: Recv-Q and
    Send-Q of a listening socket)."""
    import subprocess
    out = subprocess.run(["ss", "-Hltn", f"sport = :{port}"], capture_output=True, text=True,
                         check=True, timeout=10).stdout
    return [(int(f[1]), int(f[2])) for f in (line.split() for line in out.splitlines())
            if f and f[0] == "LISTEN"]


def test_listen_backlog_sets_each_listeners_queue(make_server):
    """`listen_backlog` is the kernel's queue in front of every worker's socket: what bounds
    the wait of the clients beyond `max_connections` (docs/deploy.md, "Overload")."""
    server = make_server(settings={"listen_backlog": 7}, threads=2)
    assert [b for _, b in listen_queues(server.port)] == [7, 7]
    default = make_server(threads=1)
    with open("/proc/sys/net/core/somaxconn") as f:
        somaxconn = int(f.read())  # the kernel's cap on any backlog
    assert [b for _, b in listen_queues(default.port)] == [min(1024, somaxconn)]
