"""Several mail hosts behind a balancer, on a private network of namespaces (netns.py):

    client    10.77.0.2  (and 10.77.0.100-.119: distinct client addresses)
    balancer  10.77.0.10 HAProxy, mode tcp, roundrobin, send-proxy-v2, SMTP health checks
    mail1..3  10.77.0.11-13 ringsmtpd, one worker each, a `proxy` listener on port 25,
              its own Maildir, state in Redis, DNS from knot
    redis     10.77.0.20 redis-server (no persistence)
    dns       10.77.0.30 knot, the zone bl.cluster.test (a DNS blocklist listing LISTED_CLIENT)

Ports are fixed (25, 6379): each service is alone in its own namespace, which the harness made,
so nothing else can hold them. Every process is started by Cluster.start() and stopped by
Cluster.stop() (SIGTERM, then SIGKILL after a deadline); every wait is bounded. The ringsmtpd
processes are tests/e2e's Server (same config base, logs, Maildir helpers) with the listen
address of their host.
"""

import csv
import importlib.util
import io
import json
import os
import pathlib
import re
import shutil
import signal
import socket
import subprocess
import sys

import netns

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parents[1]


def _load(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


# tests/e2e's harness (Server, Client, Maildir, wait_for...) and tests/dns's knot, under names
# of their own (each directory has a conftest.py).
e2e = _load("e2e_harness", ROOT / "tests" / "e2e" / "conftest.py")
dns = _load("dns_harness", ROOT / "tests" / "dns" / "server.py")
LOADTEST = pathlib.Path(os.environ.get("SMTP_LOADTEST_BIN", ROOT / "target" / "release" / "smtp-loadtest"))

SMTP_PORT = 25
REDIS_PORT = 6379
CLIENT = "10.77.0.2"
CLIENT_POOL = [f"10.77.0.{100 + i}" for i in range(20)]
LISTED_CLIENT = CLIENT_POOL[-1]  # on bl.cluster.test
BALANCER = "10.77.0.10"
MAIL = {"mail1": "10.77.0.11", "mail2": "10.77.0.12", "mail3": "10.77.0.13"}
REDIS = "10.77.0.20"
DNS = "10.77.0.30"
BL_ZONE = "bl.cluster.test"

STOP_DEADLINE = 30.0


def hosts():
    return {
        "client": [CLIENT] + CLIENT_POOL,
        "balancer": [BALANCER],
        **{name: [addr] for name, addr in MAIL.items()},
        "redis": [REDIS],
        "dns": [DNS],
    }


def bl_zone():
    rev = ".".join(reversed(LISTED_CLIENT.split(".")))
    return (
        f"$ORIGIN {BL_ZONE}.\n$TTL 300\n"
        f"@ SOA ns.{BL_ZONE}. hostmaster.{BL_ZONE}. 1 3600 600 86400 60\n"
        f"@ NS ns\nns A {DNS}\n"
        f"{rev} A 127.0.0.2\n"
        f'{rev} TXT "{LISTED_CLIENT} is listed in {BL_ZONE}"\n'
    )


def haproxy_config(d, servers):
    """The balancer's config as docs/deploy.md shows it ("Several hosts behind HAProxy"), but
    with this network's addresses and shorter timeouts and check intervals (a dead host is
    noticed within a second or two)."""
    lines = "".join(f"    server {name} {addr}:{SMTP_PORT}\n" for name, addr in servers.items())
    return f"""global
    maxconn 4000
    stats socket {d}/haproxy.sock mode 600 level admin
    pidfile {d}/haproxy.pid

defaults
    mode tcp
    timeout connect 2s
    timeout client 5m
    timeout server 5m
    timeout check 2s
    retries 3
    option redispatch

frontend smtp_in
    bind {BALANCER}:{SMTP_PORT}
    default_backend ringsmtpd

backend ringsmtpd
    balance roundrobin
    option smtpchk EHLO balancer.cluster.test
    default-server send-proxy-v2 check check-send-proxy inter 500ms fastinter 200ms downinter 500ms fall 2 rise 2
{lines}"""


class Process:
    """A process on one host, its output in a file."""

    def __init__(self, ns, cmd, logfile):
        self.logfile = pathlib.Path(logfile)
        with open(self.logfile, "ab") as log:
            self.proc = ns.popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log)

    def log(self):
        return self.logfile.read_text(errors="replace") if self.logfile.exists() else ""

    def stop(self, sig=signal.SIGTERM):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=STOP_DEADLINE)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        return self.proc.returncode

    def kill9(self):
        self.proc.kill()
        self.proc.wait(timeout=10)


class Redis(Process):
    def __init__(self, ns, d):
        d.mkdir(parents=True, exist_ok=True)
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed (tests/run installs it)")
        self.ns = ns
        super().__init__(ns, [binary, "--bind", REDIS, "--port", str(REDIS_PORT), "--protected-mode", "no",
                              "--save", "", "--appendonly", "no", "--daemonize", "no", "--dir", str(d)],
                         d / "redis.log")

    def cli(self, *args):
        return self.ns.run("redis-cli", "-h", REDIS, "-p", str(REDIS_PORT), *args, timeout=20).stdout

    def ping(self):
        try:
            return self.cli("PING").strip() == "PONG"
        except (RuntimeError, subprocess.TimeoutExpired):
            return False

    def keys(self):
        return self.cli("--raw", "KEYS", "*").split()


class HAProxy(Process):
    def __init__(self, ns, d, servers):
        d.mkdir(parents=True, exist_ok=True)
        binary = shutil.which("haproxy") or "/usr/sbin/haproxy"
        if not os.path.exists(binary):
            raise RuntimeError("haproxy is not installed (tests/run installs it: apt-get install haproxy)")
        self.dir = d
        self.config = d / "haproxy.cfg"
        self.config.write_text(haproxy_config(d, servers))
        check = subprocess.run([binary, "-c", "-q", "-f", str(self.config)], capture_output=True, text=True, timeout=30)
        if check.returncode != 0:
            raise RuntimeError(f"haproxy refused its config: {check.stdout}{check.stderr}")
        # -db: foreground, no daemon; -Ws would need systemd.
        super().__init__(ns, [binary, "-db", "-f", str(self.config)], d / "haproxy.log")

    def command(self, cmd):
        """A command on the stats socket (a Unix socket: reachable from any namespace)."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(10)
            s.connect(str(self.dir / "haproxy.sock"))
            s.sendall(cmd.encode() + b"\n")
            out = b""
            while chunk := s.recv(65536):
                out += chunk
        return out.decode()

    def stats(self):
        """Per-server rows of `show stat`: name -> dict (status, stot, econ, wretr, wredis...)."""
        try:
            text = self.command("show stat")
        except OSError:
            return {}
        rows = csv.DictReader(io.StringIO(text.lstrip("# ")))
        return {r["svname"]: r for r in rows if r["pxname"] == "ringsmtpd" and r["svname"] in MAIL}

    def status(self):
        return {name: row["status"].split()[0] for name, row in self.stats().items()}


class MailHost(e2e.Server):
    """ringsmtpd on a mail host: tests/e2e's Server with the host's PROXY listener."""

    def __init__(self, ns, addr, base, plugins, settings, extra_args=()):
        self.ns = ns
        self.addr = addr
        super().__init__(base, plugins=plugins, settings=settings, threads=1, extra_args=extra_args)
        self.port = SMTP_PORT
        (self.cfg / "listen").write_text(f"{addr}:{SMTP_PORT} proxy\n")

    def args(self):
        return [str(self.binary), "--config", str(self.cfg), "--threads", str(self.threads)] + self.extra_args

    def start(self):
        with self.ns.entered():
            return super().start()

    def seqs(self, run_id):
        """X-Loadtest-Seq -> number of files carrying it in this host's Maildir (new/), for the
        messages of smtp-loadtest run `run_id` (each run numbers its messages from 1; its id is
        in every Message-ID)."""
        found = {}
        pattern = re.compile(rb"^Message-ID: <(\d+)\." + re.escape(run_id.encode()) + rb"@smtp-loadtest>$", re.M)
        for p in self.maildir.files("new"):
            m = pattern.search(p.read_bytes())
            if m:
                seq = int(m.group(1))
                found[seq] = found.get(seq, 0) + 1
        return found


def host_settings(name, dns_port):
    """The config files every mail host gets (beside tests/e2e's base config)."""
    return {
        "me": f"{name}.cluster.test",
        "dns_servers": f"{DNS}:{dns_port}",
        "state_store": f"redis {REDIS}:{REDIS_PORT} timeout 2",
        "dnsbl_zones": BL_ZONE,
        # Short drains: a stop at a test's end waits at most this long for a session left open.
        "shutdown_timeout": 10,
    }


class Cluster:
    """The whole network and its services. `plugins` is each mail host's config/plugins
    ({maildir} is the host's Maildir); `settings` adds config files."""

    def __init__(self, base, plugins, settings=None):
        self.base = pathlib.Path(base)
        self.plugins = plugins
        self.extra_settings = dict(settings or {})
        self.net = None
        self.knot = None
        self.redis = None
        self.haproxy = None
        self.mail = {}
        self.retired = []  # ringsmtpd processes replaced during a test (upgrades)

    # -- start, stop ------------------------------------------------------------------------
    def start(self):
        try:
            self.net = netns.Network(hosts())
            for name in MAIL:
                # Connections queued on a listener that closes (an upgrade's old process) go to
                # the sockets still open on the port (Linux 5.14+), as docs/deploy.md says to set.
                self.net[name].run("sysctl", "-qw", "net.ipv4.tcp_migrate_req=1")
            with self.net["dns"].entered():
                self.knot = dns.start_knot(zones={BL_ZONE: bl_zone()}, only=True, also_listen=(DNS,))
            self.redis = Redis(self.net["redis"], self.base / "redis")
            e2e.wait_for(self.redis.ping, 20, "redis-server to answer PING", interval=0.05)
            for name, addr in MAIL.items():
                self.mail[name] = self.make_host(name).start()
            self.haproxy = HAProxy(self.net["balancer"], self.base / "haproxy", MAIL)
            self.wait_status({name: "UP" for name in MAIL})
            return self
        except BaseException:
            self.stop()
            raise

    def make_host(self, name, extra_args=(), dirname=None):
        settings = {**host_settings(name, self.knot.port), **self.extra_settings}
        return MailHost(self.net[name], MAIL[name], self.base / (dirname or name), self.plugins, settings,
                        extra_args)

    def join(self, name):
        """Starts a second ringsmtpd on host `name` with `--join`: the same config directory
        and Maildir as the running one, a log of its own. Returns it once it listens; the
        caller then stops the old one (self.mail[name]) and calls promote(name, new)."""
        old = self.mail[name]
        new = self.make_host(name, extra_args=["--join"], dirname=f"{name}-joined{len(self.retired)}")
        new.cfg, new.maildir = old.cfg, old.maildir
        return new.start()

    def promote(self, name, new):
        """`new` (from join) is now host `name`'s process; the old one is kept for stop()."""
        self.retired.append(self.mail[name])
        self.mail[name] = new

    def stop(self):
        """Stops everything; returns {process name: exit code} of the ringsmtpd processes."""
        codes = {}
        for name, host in list(self.mail.items()) + [(f"retired{i}", h) for i, h in enumerate(self.retired)]:
            if host.proc is not None:
                codes[name] = host.stop()
                host.close()
        if self.haproxy:
            self.haproxy.stop()
        if self.redis:
            self.redis.stop()
        if self.knot:
            self.knot.stop()
        if self.net:
            self.net.close()
        return codes

    # -- helpers ----------------------------------------------------------------------------
    def wait_status(self, want, deadline=30):
        e2e.wait_for(lambda: all(self.haproxy.status().get(n) == s for n, s in want.items()), deadline,
                     f"HAProxy to see {want} (now {self.haproxy.status()})", interval=0.1)

    def connect(self, source=CLIENT, banner=True):
        """A client session through the balancer from `source` (an address of the client
        host): a tests/e2e Client. `.host` is the mail host that answered (from its banner)."""
        c = e2e.Client.__new__(e2e.Client)
        c.sock = self.net["client"].connect(BALANCER, SMTP_PORT, source=source)
        c.buf = b""
        c.host = None
        if banner:
            r = c.expect(220)
            c.host = r.lines[0].split(" ", 1)[0].split(".", 1)[0]
        return c

    def delivered(self, run_id):
        """X-Loadtest-Seq -> copies of smtp-loadtest run `run_id`'s messages, over every mail
        host's Maildir (a joined process shares its host's Maildir)."""
        total = {}
        for host in self.mail.values():
            for seq, n in host.seqs(run_id).items():
                total[seq] = total.get(seq, 0) + n
        return total

    def set_state(self, name, state):
        """HAProxy's admin state of mail host `name`: "drain" (no new sessions; those open go
        on) or "ready"."""
        out = self.haproxy.command(f"set server ringsmtpd/{name} state {state}").strip()
        assert out == "", f"haproxy: {out}"

    def wait_no_sessions(self, name, deadline=60):
        """Waits until HAProxy has no session open to mail host `name`."""
        e2e.wait_for(lambda: self.haproxy.stats()[name]["scur"] == "0", deadline,
                     f"the sessions on {name} to end", interval=0.05)

    def restart_balancer(self):
        """Stops HAProxy (SIGTERM: at once, its connections cut) and starts it again on the same
        config; returns once it sees the mail hosts that run as UP."""
        self.haproxy.stop()
        self.haproxy = HAProxy(self.net["balancer"], self.base / "haproxy", MAIL)
        self.wait_status({name: "UP" for name, h in self.mail.items() if h.proc.poll() is None})

    def loadtest(self, out, *args):
        """Starts smtp-loadtest on the client host against the balancer (the bounds in `args`:
        --messages and/or --duration); returns a Load."""
        return Load(self.net["client"], out, args)


class Load:
    """One smtp-loadtest run from the client host through the balancer."""

    def __init__(self, ns, out, args):
        if not LOADTEST.exists():
            raise RuntimeError(f"{LOADTEST} is missing: tests/run builds it (cargo build --release --workspace)")
        self.out = pathlib.Path(out)
        self.out.mkdir(parents=True, exist_ok=True)
        cmd = [str(LOADTEST), "--target", f"{BALANCER}:{SMTP_PORT}", "--allow-host", BALANCER,
               "--threads", "1", "--json", "--quiet", "--accepted", str(self.out / "accepted"),
               "--to", "example.test", "--from", "load@client.test", "--timeout", "20", *args]
        with open(self.out / "report.json", "wb") as report, open(self.out / "stderr", "wb") as err:
            self.proc = ns.popen(cmd, stdin=subprocess.DEVNULL, stdout=report, stderr=err)

    def running(self):
        return self.proc.poll() is None

    def wait(self, deadline=120):
        """Waits for the run's end (failing the test if it does not end: a hang); returns the
        JSON report, with "accepted_seqs" (the list --accepted wrote) added."""
        try:
            code = self.proc.wait(timeout=deadline)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
            raise AssertionError(f"smtp-loadtest did not end within {deadline} s: a client hung")
        err = (self.out / "stderr").read_text(errors="replace")
        assert code == 0, f"smtp-loadtest exit {code}: {err}"
        report = json.loads((self.out / "report.json").read_text())
        report["accepted_seqs"] = [int(l) for l in (self.out / "accepted").read_text().split()]
        return report
