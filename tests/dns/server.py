"""A real DNS server for tests: Knot DNS (authoritative) on a free loopback port, with test
zones, plus two misbehaving helpers. Loopback only; everything stops by itself.

Python use (pytest, the DNS plugin e2e tests):

    from server import start_knot           # with tests/dns on sys.path
    with start_knot() as knot:              # zones in tests/dns/zones/, plus broken.test
        knot.port                           # 127.0.0.1:knot.port, UDP and TCP
        knot.query_count()                  # queries received since start (udp + tcp)
        knot.counts()                       # {"udp": n, "tcp": m}
    # or: knot = start_knot(); ...; knot.stop()

    start_knot(zones={"extra.test": "$ORIGIN extra.test.\\n..."}, only=True)
        # add zones from text (only=True: just these, not the shipped ones)
    start_silent()                          # a UDP/TCP port that never answers (timeouts)
    start_spoofing_proxy(knot.port)         # forwards to knot, and sends two forged replies
                                            # (wrong ID; wrong question) before each real one

`broken.test` is configured without a zone file, so Knot answers SERVFAIL for any name in
it. The shipped zones (tests/dns/zones/): dnsbl.test (127.0.0.2 and 127.0.0.4 listed, with
TXT), rhsbl.test (bad.example.test listed), example.test (MX/A/AAAA/TXT, CNAME www, nomx,
big: a TXT set too large for UDP), 127.in-addr.arpa (PTR of 127.0.0.1/.2/.4).

Command line (for the Rust integration tests, tests/dns/main.rs):

    python3 tests/dns/server.py serve
        prints one line: "port=P silent=S spoof=X" and then answers lines on stdin:
        "count" -> "udp=N tcp=M"; end of input stops everything.

A missing knotd is an error that says "apt-get install knot": tests fail, never skip.
"""

import os
import pathlib
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

HERE = pathlib.Path(__file__).resolve().parent
ZONES = HERE / "zones"
SERVFAIL_ZONES = ("broken.test",)
START_DEADLINE = 20.0  # seconds: bounds a hang, never decides a verdict

INSTALL_HINT = "apt-get install knot   (Debian package 'knot': the Knot DNS server)"


def _which(name):
    for d in ("/usr/sbin", "/usr/bin", "/sbin", "/bin", "/usr/local/sbin", "/usr/local/bin"):
        p = pathlib.Path(d) / name
        if p.exists():
            return str(p)
    return shutil.which(name)


def free_port():
    """A port free for both UDP and TCP on 127.0.0.1 right now."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.bind(("127.0.0.1", 0))
            port = u.getsockname()[1]
            try:
                with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
                    t.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port on 127.0.0.1")


# ---------------------------------------------------------------------------------------------
# A minimal DNS client, enough for readiness checks and the harness's own tests.

TYPES = {"A": 1, "NS": 2, "CNAME": 5, "SOA": 6, "PTR": 12, "MX": 15, "TXT": 16, "AAAA": 28}


def build_query(name, qtype="A", qid=0x1234):
    q = struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0)
    for label in name.rstrip(".").split("."):
        q += bytes([len(label)]) + label.encode("ascii")
    return q + b"\0" + struct.pack("!HH", TYPES[qtype], 1)


def query(port, name, qtype="A", tcp=False, timeout=2.0):
    """Sends one query to 127.0.0.1:port; returns (rcode, answer count, truncated, reply)."""
    q = build_query(name, qtype)
    if tcp:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.sendall(struct.pack("!H", len(q)) + q)
            n = struct.unpack("!H", _recv_exact(s, 2))[0]
            r = _recv_exact(s, n)
    else:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(timeout)
            s.sendto(q, ("127.0.0.1", port))
            r, _ = s.recvfrom(65535)
    flags, _qd, an = struct.unpack("!HHH", r[2:8])
    return flags & 0xF, an, bool(flags & 0x0200), r


def _recv_exact(s, n):
    out = b""
    while len(out) < n:
        chunk = s.recv(n - len(out))
        if not chunk:
            raise ConnectionError("closed early")
        out += chunk
    return out


# ---------------------------------------------------------------------------------------------
# Knot


class KnotServer:
    """A running knotd. Use start_knot() to make one."""

    def __init__(self, zones, servfail_zones, also_listen=()):
        self.knotd = _which("knotd")
        self.knotc = _which("knotc")
        if not self.knotd or not self.knotc:
            raise RuntimeError(f"knotd/knotc not found: {INSTALL_HINT}")
        self.dir = pathlib.Path(tempfile.mkdtemp(prefix="ringsmtpd-knot-"))
        self.zones = dict(zones)
        self.servfail_zones = tuple(servfail_zones)
        # Addresses knot also listens on (same port), beside 127.0.0.1: tests/cluster runs it
        # in a network namespace where the other hosts reach it at such an address.
        self.also_listen = tuple(also_listen)
        self.port = None
        self.proc = None
        self._baseline = {"udp": 0, "tcp": 0}
        zdir = self.dir / "zones"
        zdir.mkdir()
        (self.dir / "db").mkdir()
        for origin, text in self.zones.items():
            (zdir / f"{origin}.zone").write_text(text)
        self.sock = self.dir / "knot.sock"

    def _config(self, port):
        zones = "".join(f"  - domain: {z}\n" for z in list(self.zones) + list(self.servfail_zones))
        listen = ", ".join(f"{a}@{port}" for a in ("127.0.0.1",) + self.also_listen)
        return f"""server:
    listen: [ {listen} ]
    rundir: {self.dir}
    pidfile: {self.dir}/knot.pid
    udp-workers: 1
    tcp-workers: 1
    background-workers: 1
database:
    storage: {self.dir}/db
control:
    listen: {self.sock}
log:
  - target: {self.dir}/knot.log
    any: info
mod-stats:
  - id: default
    request-protocol: on
template:
  - id: default
    storage: {self.dir}/zones
    file: "%s.zone"
    global-module: mod-stats/default
    zonefile-sync: -1
    journal-content: none
zone:
{zones}"""

    def start(self):
        last = ""
        for _ in range(5):  # a port taken between free_port() and bind: try another
            port = free_port()
            conf = self.dir / "knot.conf"
            conf.write_text(self._config(port))
            check = subprocess.run([self.knotc, "-c", str(conf), "conf-check"],
                                   capture_output=True, text=True, timeout=30)
            if check.returncode != 0:
                raise RuntimeError(f"knot config refused: {check.stdout}{check.stderr}")
            log = open(self.dir / "knotd.out", "w")
            self.proc = subprocess.Popen([self.knotd, "-c", str(conf)], stdout=log,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
            log.close()
            self.port = port
            if self._wait_ready():
                self._baseline = self._raw_counts()
                return self
            last = self.log()
            self._kill()
        raise RuntimeError(f"knotd did not start:\n{last}")

    def _wait_ready(self):
        end = time.monotonic() + START_DEADLINE
        pending = set(self.zones)
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                return False
            for z in list(pending):
                try:
                    rcode, an, _, _ = query(self.port, z, "SOA", timeout=0.3)
                except OSError:
                    break
                if rcode == 0 and an == 1:
                    pending.discard(z)
            if not pending:
                return True
            time.sleep(0.05)
        return False

    def log(self):
        out = []
        for name in ("knotd.out", "knot.log"):
            p = self.dir / name
            if p.exists():
                out.append(p.read_text(errors="replace"))
        return "".join(out)

    def _raw_counts(self):
        r = subprocess.run([self.knotc, "-s", str(self.sock), "stats", "mod-stats.request-protocol"],
                           capture_output=True, text=True, timeout=10)
        counts = {"udp": 0, "tcp": 0}
        for line in r.stdout.splitlines():
            # mod-stats.request-protocol[udp4] = 12
            if "[" in line and "=" in line:
                proto = line.split("[", 1)[1].split("]", 1)[0]
                n = int(line.rsplit("=", 1)[1])
                counts["udp" if proto.startswith("udp") else "tcp"] += n
        return counts

    def counts(self):
        """Queries received since the server was ready: {"udp": n, "tcp": m}."""
        raw = self._raw_counts()
        return {k: raw[k] - self._baseline[k] for k in raw}

    def query_count(self):
        c = self.counts()
        return c["udp"] + c["tcp"]

    def _kill(self):
        if self.proc and self.proc.poll() is None:
            subprocess.run([self.knotc, "-s", str(self.sock), "stop"], capture_output=True, timeout=10)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)

    def stop(self):
        self._kill()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def shipped_zones():
    """The zones of tests/dns/zones/, origin -> text."""
    return {p.name[: -len(".zone")]: p.read_text() for p in sorted(ZONES.glob("*.zone"))}


def start_knot(zones=None, only=False, servfail_zones=SERVFAIL_ZONES, also_listen=()):
    """Starts knotd on a free 127.0.0.1 port with the shipped zones plus `zones` (origin ->
    zone text; `only=True`: just those), and on the same port of each `also_listen` address.
    Returns a KnotServer (.port, .stop(), .counts(), .query_count()); also a context manager."""
    all_zones = {} if only else shipped_zones()
    all_zones.update(zones or {})
    return KnotServer(all_zones, servfail_zones, also_listen).start()


# ---------------------------------------------------------------------------------------------
# Misbehaving servers


class _Background:
    def __init__(self):
        self._stop = threading.Event()
        self._threads = []
        self.received = 0

    def _run(self, fn):
        t = threading.Thread(target=fn, daemon=True)
        t.start()
        self._threads.append(t)

    def stop(self):
        self._stop.set()
        for t in self._threads:
            t.join(timeout=5)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


class SilentServer(_Background):
    """Receives on UDP and accepts on TCP, answers nothing."""

    def __init__(self):
        super().__init__()
        self.port = free_port()
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind(("127.0.0.1", self.port))
        self.udp.settimeout(0.05)
        self.tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.tcp.bind(("127.0.0.1", self.port))
        self.tcp.listen(16)
        self._run(self._loop)

    def _loop(self):
        while not self._stop.is_set():
            try:
                self.udp.recvfrom(4096)
                self.received += 1
            except OSError:
                pass
        self.udp.close()
        self.tcp.close()


class SpoofingProxy(_Background):
    """Forwards each UDP query to knot; before relaying the real reply it sends the client
    two forgeries from the same address: the reply with a wrong ID, and the reply with one
    letter of the question's name changed. A correct client drops both."""

    def __init__(self, upstream_port):
        super().__init__()
        self.upstream = ("127.0.0.1", upstream_port)
        self.port = free_port()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", self.port))
        self.sock.settimeout(0.05)
        self.forged = 0
        self._run(self._loop)

    def _loop(self):
        while not self._stop.is_set():
            try:
                q, client = self.sock.recvfrom(4096)
            except OSError:
                continue
            self.received += 1
            try:
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as up:
                    up.settimeout(2)
                    up.sendto(q, self.upstream)
                    r, _ = up.recvfrom(65535)
            except OSError:
                continue
            wrong_id = bytes([r[0] ^ 0xFF, r[1]]) + r[2:]
            # The question starts at byte 12 with a length octet; change its first letter.
            first = r[13:14]
            other = b"q" if first != b"q" else b"z"
            wrong_q = r[:13] + other + r[14:]
            for forged in (wrong_id, wrong_q):
                self.sock.sendto(forged, client)
                self.forged += 1
            self.sock.sendto(r, client)
        self.sock.close()


def start_silent():
    """A port that never answers (for timeouts). Returns a SilentServer (.port, .stop())."""
    return SilentServer()


def start_spoofing_proxy(upstream_port):
    """A spoofing proxy in front of `upstream_port` (.port, .stop(), .forged)."""
    return SpoofingProxy(upstream_port)


# ---------------------------------------------------------------------------------------------


def serve():
    try:
        knot = start_knot()
    except RuntimeError as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        sys.exit(2)
    silent = start_silent()
    spoof = start_spoofing_proxy(knot.port)
    try:
        print(f"port={knot.port} silent={silent.port} spoof={spoof.port}", flush=True)
        for line in sys.stdin:
            if line.strip() == "count":
                c = knot.counts()
                print(f"udp={c['udp']} tcp={c['tcp']}", flush=True)
    finally:
        spoof.stop()
        silent.stop()
        knot.stop()


if __name__ == "__main__":
    if len(sys.argv) >= 2 and sys.argv[1] == "serve":
        serve()
    else:
        print(__doc__)
        sys.exit(2)
