"""End-to-end harness: starts the release binary on free loopback ports, each server in its
own temp dir with its own config (a copy of the shipped config/ with test adjustments), and
gives the tests a raw SMTP client and Maildir helpers.

Every wait here has a deadline: a hung server makes a test fail, never hang.
"""

import os
import pathlib
import random
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
BINARY = pathlib.Path(os.environ.get("RINGSMTPD_BIN", ROOT / "target" / "release" / "ringsmtpd"))
# The same server built with `--features test-plugins` (the fault-injection plugin `misbehave`,
# which a production build does not have); tests/run builds it.
TEST_PLUGINS_BINARY = pathlib.Path(
    os.environ.get("RINGSMTPD_TEST_PLUGINS_BIN", ROOT / "target" / "release" / "ringsmtpd-test-plugins")
)
SHIPPED_CONFIG = ROOT / "config"
ME = "mx.test"

# Generous deadlines: they only bound a hang, they never decide a verdict on speed.
START_DEADLINE = 20.0
STOP_DEADLINE = 45.0
IO_TIMEOUT = 20.0


# Ports are picked below the kernel's ephemeral range (net.ipv4.ip_local_port_range, 32768
# and up by default): a port the kernel handed out for bind(0) is also one it hands out as the
# source port of any outgoing connection, so under load another test's client could take it
# between the pick and the server's bind ("Address already in use").
PORT_RANGE = (10000, 32767)


def free_ports(n):
    """`n` distinct ports nobody uses right now, picked at random below the ephemeral range
    and checked by binding them (all sockets open at once, so none comes back twice)."""
    socks = []
    try:
        for _ in range(1000):
            if len(socks) == n:
                break
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                s.bind(("127.0.0.1", random.randint(*PORT_RANGE)))
                socks.append(s)
            except OSError:
                s.close()
        if len(socks) < n:
            pytest.fail(f"no {n} free ports in {PORT_RANGE}")
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def free_port():
    return free_ports(1)[0]


def wait_for(pred, deadline, what, interval=0.02):
    """Polls `pred` until it returns something truthy; fails the test after `deadline` s."""
    end = time.monotonic() + deadline
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > end:
            pytest.fail(f"timed out after {deadline}s waiting for {what}")
        time.sleep(interval)


def private_dir(prefix, parent="/tmp"):
    """A fresh <parent>/<prefix>* dir (/tmp by default) that other users (postfix,
    Debian-exim, dovecot) can traverse: pytest's tmp dirs are root-only. The caller removes
    it."""
    base = pathlib.Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    os.chmod(base, 0o755)
    return base


@pytest.fixture(scope="session", autouse=True)
def _binary_exists():
    for binary in (BINARY, TEST_PLUGINS_BINARY):
        if not binary.exists():
            pytest.exit(f"{binary} is missing: tests/run builds it", 2)


# ---------------------------------------------------------------------------------------------
# Maildir


class Maildir:
    def __init__(self, path):
        self.path = pathlib.Path(path)

    def files(self, sub="new"):
        d = self.path / sub
        if not d.is_dir():
            return []
        return sorted(p for p in d.iterdir() if not p.name.startswith("."))

    def messages(self):
        """The contents of every file in new/."""
        return [p.read_bytes() for p in self.files("new")]

    def wait_count(self, n, deadline=IO_TIMEOUT):
        wait_for(lambda: len(self.files("new")) >= n, deadline, f"{n} message(s) in {self.path}/new")
        return self.messages()

    def only(self):
        msgs = self.messages()
        assert len(msgs) == 1, f"expected exactly one message in new/, found {len(msgs)}"
        return msgs[0]

    def assert_empty(self):
        assert self.files("new") == [], "a message was delivered that must not be"
        assert self.files("tmp") == [], "a partial file was left in tmp/"


def split_delivered(data, n_rcpts=1):
    """Splits a delivered file into the header fields the server prepended and the message.

    The server writes Return-Path, one Delivered-To per recipient, then the core's
    Authentication-Results and Received, each possibly folded over several lines. Returns
    ([(name, unfolded value)], the rest).
    """
    want = 1 + n_rcpts + 2
    fields = []
    pos = 0
    while len(fields) < want:
        end = data.index(b"\n", pos)
        line = data[pos:end].decode("utf-8")
        pos = end + 1
        while data[pos : pos + 1] in (b"\t", b" "):  # folded continuation
            end = data.index(b"\n", pos)
            line += "\n" + data[pos:end].decode("utf-8")
            pos = end + 1
        name, _, value = line.partition(": ")
        fields.append((name, value))
    return fields, data[pos:]


RECEIVED_RE = re.compile(
    r"from (?P<host>\S+) \(HELO (?P<helo>[^)]*)\) \((?P<ip>[0-9a-fA-F.:]+)\)\n"
    r"\tby " + re.escape(ME) + r" \(ringsmtpd/[0-9][^)]*\) with (?P<proto>[A-Z0-9]+); "
    r"\w{3}, \d\d \w{3} \d{4} \d\d:\d\d:\d\d [+-]\d{4}$"
)


def check_delivered(data, sender, rcpts, message, ip="127.0.0.1", proto="ESMTP", helo=None):
    """Asserts the file is exactly the prepended headers + `message` (CRLF already turned
    into LF by the caller or not: this function does it). Returns the Received match."""
    fields, rest = split_delivered(data, len(rcpts))
    names = [n for n, _ in fields]
    assert names == ["Return-Path"] + ["Delivered-To"] * len(rcpts) + [
        "Authentication-Results",
        "Received",
    ], names
    assert fields[0][1] == f"<{sender}>"
    assert [v for _, v in fields[1 : 1 + len(rcpts)]] == list(rcpts)
    assert fields[-2][1] == f"{ME}; auth=none"
    m = RECEIVED_RE.match(fields[-1][1])
    assert m, f"Received header not as expected: {fields[-1][1]!r}"
    assert m.group("ip") == ip
    assert m.group("proto") == proto
    if helo is not None:
        assert m.group("helo") == helo
    expected = message.replace(b"\r\n", b"\n")
    assert b"\r" not in rest, "a CR survived into the Maildir file"
    if rest != expected:
        # A readable failure for a big message: where the first difference is.
        i = next((k for k in range(min(len(rest), len(expected))) if rest[k] != expected[k]), None)
        i = min(len(rest), len(expected)) if i is None else i
        pytest.fail(
            f"message differs at byte {i} (got {len(rest)} bytes, expected {len(expected)}): "
            f"got {rest[max(0, i - 40) : i + 40]!r}, expected {expected[max(0, i - 40) : i + 40]!r}"
        )
    return m


# ---------------------------------------------------------------------------------------------
# The server


class Server:
    """One ringsmtpd process with its own directory:
    <dir>/config, <dir>/Maildir, <dir>/spool, <dir>/server.log (stderr)."""

    def __init__(self, base, plugins=None, settings=None, threads=None, proxy=False, extra_args=(),
                 binary=BINARY):
        self.dir = pathlib.Path(base)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.cfg = self.dir / "config"
        self.maildir = Maildir(self.dir / "Maildir")
        self.spool = self.dir / "spool"
        self.logfile = self.dir / "server.log"
        self.proxy = proxy
        self._pick_ports()
        self.auto_port = True  # a test that sets .port itself gets no retry on another port
        self.threads = threads
        self.extra_args = list(extra_args)
        self.binary = binary
        self.proc = None
        self._log_fh = None
        write_config(self.cfg, self.maildir.path, self.spool, self.port, plugins, settings)

    def _pick_ports(self):
        ports = free_ports(2 if self.proxy else 1)
        self._port = ports[0]
        self.proxy_port = ports[1] if self.proxy else None

    @property
    def port(self):
        return self._port

    @port.setter
    def port(self, value):
        self._port = value
        self.auto_port = False

    # -- config --------------------------------------------------------------------------
    def set(self, name, value):
        (self.cfg / name).write_text(value if value.endswith("\n") else value + "\n")

    def set_plugins(self, lines):
        self.set("plugins", "\n".join(lines))

    # -- process -------------------------------------------------------------------------
    def args(self):
        a = [str(self.binary), "--config", str(self.cfg), "--listen", f"127.0.0.1:{self.port}"]
        if self.proxy_port:
            a += ["--listen", f"127.0.0.1:{self.proxy_port} proxy"]
        if self.threads:
            a += ["--threads", str(self.threads)]
        return a + self.extra_args

    def check_config(self, binary=None):
        """Runs `<binary> --config <this server's config> --check` (this server's binary unless
        told) in the server's dir and environment; returns the CompletedProcess (text)."""
        return subprocess.run(
            [str(binary or self.binary), "--config", str(self.cfg), "--check"],
            cwd=self.dir,
            env=server_env(self.dir),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=30,
        )

    def start(self):
        for attempt in range(3):
            if self._log_fh:
                self._log_fh.close()
            self._log_fh = open(self.logfile, "ab")
            self.proc = subprocess.Popen(
                self.args(),
                cwd=self.dir,
                stdin=subprocess.DEVNULL,
                stdout=self._log_fh,
                stderr=self._log_fh,
                env=server_env(self.dir),
            )

            def ready():
                return self.proc.poll() is not None or "listening on" in self.log()

            wait_for(ready, START_DEADLINE, "the server to listen")
            if self.proc.poll() is None:
                return self
            # Another process took the free port between our check and the bind: retry.
            if self.auto_port and "cannot listen on" in self.log() and attempt < 2:
                self._pick_ports()
                (self.cfg / "listen").write_text(f"127.0.0.1:{self._port}\n")
                continue
            pytest.fail(f"ringsmtpd exited with {self.proc.returncode} at start:\n{self.log()}")
        return self

    def log(self):
        try:
            return self.logfile.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def wait_log(self, needle, deadline=IO_TIMEOUT, count=1):
        wait_for(lambda: self.log().count(needle) >= count, deadline, f"log line {needle!r}")

    def signal(self, sig):
        self.proc.send_signal(sig)

    def wait_exit(self, deadline=STOP_DEADLINE):
        try:
            return self.proc.wait(timeout=deadline)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
            pytest.fail(f"ringsmtpd did not exit within {deadline}s:\n{self.log()[-3000:]}")

    def stop(self):
        """SIGTERM and wait; returns the exit code (SIGKILL after the deadline)."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=STOP_DEADLINE)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
            return None

    def kill9(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def close(self):
        self.stop()
        if self._log_fh:
            self._log_fh.close()

    # -- clients -------------------------------------------------------------------------
    def connect(self, port=None, timeout=IO_TIMEOUT, banner=True):
        c = Client(port or self.port, timeout=timeout)
        if banner:
            c.expect(220)
        return c


def server_env(base):
    env = dict(os.environ)
    # Files missing from the config dir fall back to $QMAIL/control: point that nowhere, so
    # the machine's qmail (if any) never leaks into a test.
    env["QMAIL"] = str(pathlib.Path(base) / "no-qmail")
    env.pop("QPSMTPD_CONFIG", None)
    return env


def write_config(cfg, maildir, spool, port, plugins=None, settings=None):
    """A copy of the shipped config/ adjusted for a test: own port, own Maildir and spool,
    a fixed `me`, then the test's own settings."""
    if cfg.exists():
        shutil.rmtree(cfg)
    if SHIPPED_CONFIG.is_dir():
        shutil.copytree(SHIPPED_CONFIG, cfg)
    else:
        cfg.mkdir(parents=True)
        (cfg / "rcpthosts").write_text("localhost\nexample.test\n")
    (cfg / "listen").write_text(f"127.0.0.1:{port}\n")
    (cfg / "me").write_text(ME + "\n")
    (cfg / "spool_dir").write_text(f"{spool}\n")
    (cfg / "loglevel").write_text("6\n")
    stay_root(cfg)
    # The values the tests rely on, whatever the shipped config says today.
    for name, value in (("databytes", 52428800), ("size_threshold", 1048576), ("timeout", 300)):
        (cfg / name).write_text(f"{value}\n")
    if plugins is None:
        plugins = ["rcpt_ok", "queue/maildir {maildir}"]
    text = "\n".join(plugins).replace("{maildir}", str(maildir))
    (cfg / "plugins").write_text(text + "\n")
    for name, value in (settings or {}).items():
        (cfg / name).write_text(f"{value}\n")


def stay_root(cfg):
    """Started as root, a server refuses to run without the config file `user` and drops to
    the account it names (docs/deploy.md, "Privileges"). The tests' servers stay root on
    purpose (`user root`): their temp dirs are root's only, and what they test is SMTP;
    test_privileges.py starts servers that drop. Not root: no `user` file, nothing to drop."""
    (cfg / "group").unlink(missing_ok=True)
    if os.geteuid() == 0:
        (cfg / "user").write_text("root\n")
    else:
        (cfg / "user").unlink(missing_ok=True)


@pytest.fixture
def make_server(tmp_path):
    """make_server(plugins=..., settings=..., threads=..., proxy=..., start=True) -> Server.
    Every server made is stopped at the end of the test."""
    servers = []

    def make(start=True, name=None, **kw):
        srv = Server(tmp_path / (name or f"srv{len(servers)}"), **kw)
        servers.append(srv)
        if start:
            srv.start()
        return srv

    yield make
    bad = []
    for srv in servers:
        running = srv.proc is not None and srv.proc.poll() is None
        code = srv.stop()
        srv.close()
        # A server still running at the end must drain and exit 0 on SIGTERM; one that died
        # during the test must have been killed on purpose (kill -9) or stopped cleanly.
        if srv.proc is not None and (code is None or code not in (0, -signal.SIGKILL)):
            bad.append(f"{srv.dir.name}: exit {code} ({'at teardown' if running else 'during the test'})"
                       f"\n{srv.log()[-3000:]}")
    if bad:
        pytest.fail("server(s) did not stop cleanly:\n" + "\n".join(bad))


@pytest.fixture
def peers():
    """A list for the private peer instances a test starts (Postfix, Dovecot: anything with
    .stop() and a .base dir): at the end of the test each is stopped and its dir removed."""
    made = []
    yield made
    for peer in made:
        peer.stop()
        shutil.rmtree(peer.base, ignore_errors=True)


@pytest.fixture
def make_postfix(peers):
    """make_postfix(prefix, hostname, start=True, **kw) -> private_postfix.PrivatePostfix (see
    there for kw). Fails the test without Postfix or root; every instance made is stopped and
    removed at the end of the test."""
    from private_postfix import PrivatePostfix, require_postfix

    require_postfix()

    def make(prefix, hostname, start=True, **kw):
        pf = PrivatePostfix(prefix, hostname, **kw)
        peers.append(pf)
        return pf.start() if start else pf

    return make


@pytest.fixture
def server(make_server):
    """The default server: rcpt_ok + queue/maildir, shipped settings."""
    return make_server()


# ---------------------------------------------------------------------------------------------
# A raw SMTP client


class Reply:
    def __init__(self, code, lines):
        self.code = code
        self.lines = lines  # texts after "NNN-" / "NNN "

    @property
    def text(self):
        return "\n".join(self.lines)

    def enhanced(self):
        first = self.lines[0].split(" ", 1)[0] if self.lines else ""
        return first if re.fullmatch(r"[245]\.\d{1,3}\.\d{1,3}", first) else None

    def __repr__(self):
        return f"Reply({self.code}, {self.lines!r})"


class Closed(Exception):
    pass


class Client:
    def __init__(self, port, host="127.0.0.1", timeout=IO_TIMEOUT):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.settimeout(timeout)
        self.buf = b""

    def send(self, data):
        if isinstance(data, str):
            data = data.encode()
        self.sock.sendall(data)

    def _line(self):
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise Closed(f"connection closed; unparsed: {self.buf!r}")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line.decode("utf-8", "replace")

    def reply(self):
        lines = []
        while True:
            line = self._line()
            assert re.match(r"^\d{3}[ -]", line), f"not a reply line: {line!r}"
            lines.append(line[4:])
            if line[3] == " ":
                return Reply(int(line[:3]), lines)

    def expect(self, code, enhanced=None):
        r = self.reply()
        assert r.code == code, f"expected {code}, got {r}"
        if enhanced is False or code in (220, 354):
            pass  # the banner, EHLO/HELO and 354 carry no enhanced code
        elif enhanced is None:
            assert r.enhanced() and r.enhanced()[0] == str(code)[0], f"no enhanced code: {r}"
        else:
            assert r.enhanced() == enhanced, f"expected enhanced {enhanced}, got {r}"
        return r

    def cmd(self, line, code=None, enhanced=None):
        self.send(line + "\r\n")
        if code is None:
            return self.reply()
        return self.expect(code, enhanced)

    def ehlo(self, name="client.test"):
        return self.cmd(f"EHLO {name}", 250, enhanced=False)

    def start_data(self, sender, rcpts):
        """MAIL FROM, a RCPT TO per recipient (each must get 250), DATA (354): the test then
        sends the message text itself (in pieces, unfinished, as it needs)."""
        self.cmd(f"MAIL FROM:<{sender}>", 250)
        for rcpt in rcpts:
            self.cmd(f"RCPT TO:<{rcpt}>", 250)
        self.cmd("DATA", 354)

    def transaction(self, sender, rcpts, message, code=None, enhanced=None):
        """One mail transaction on this session: MAIL FROM, a RCPT TO per recipient (each must
        get 250), DATA (354), the CRLF `message` dot-stuffed with its final dot. Returns the
        reply to the final dot; given `code` (and `enhanced`), checks it as expect() does."""
        self.start_data(sender, rcpts)
        self.send(dot_stuff(message))
        return self.reply() if code is None else self.expect(code, enhanced)

    def read_until_closed(self, deadline=IO_TIMEOUT):
        """Reads until EOF; returns everything read (after what was parsed). Fails if the
        server keeps the connection open past the deadline."""
        end = time.monotonic() + deadline
        data = self.buf
        self.buf = b""
        while True:
            left = end - time.monotonic()
            if left <= 0:
                pytest.fail(f"server kept the connection open; read so far: {data!r}")
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                continue
            except (ConnectionResetError, BrokenPipeError):
                return data
            if not chunk:
                return data
            data += chunk

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def send_message(server, rcpts, message, sender="sender@client.test", helo="client.test"):
    """A whole session with `server`: EHLO `helo`, one transaction (Client.transaction), QUIT.
    Returns the reply to the final dot, whatever its code: the test checks it."""
    c = server.connect()
    try:
        c.ehlo(helo)
        reply = c.transaction(sender, rcpts, message)
        c.cmd("QUIT", 221)
        return reply
    finally:
        c.close()


def parse_replies(data):
    """Splits raw bytes into Reply objects (all complete replies)."""
    out, lines = [], []
    for raw in data.split(b"\r\n"):
        if not raw:
            continue
        line = raw.decode("utf-8", "replace")
        lines.append(line[4:])
        if len(line) >= 4 and line[3] == " ":
            out.append(Reply(int(line[:3]), lines))
            lines = []
    return out


def dot_stuff(message):
    """CRLF message -> DATA payload with the terminating dot."""
    lines = message.split(b"\r\n")
    assert lines[-1] == b"", "message must end with CRLF"
    stuffed = [b"." + l if l.startswith(b".") else l for l in lines[:-1]]
    return b"\r\n".join(stuffed) + b"\r\n.\r\n"


def make_message(subject, body_lines, extra_headers=()):
    head = ["From: sender@client.test", "To: rcpt@example.test", f"Subject: {subject}"]
    head += list(extra_headers)
    parts = [h.encode() for h in head] + [b""]
    parts += [l if isinstance(l, bytes) else l.encode() for l in body_lines]
    return b"\r\n".join(parts) + b"\r\n"
