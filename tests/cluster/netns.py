"""Network namespaces as hosts, joined by veth pairs to a bridge: a small private network that
no packet leaves. Linux only, as root.

    net = Network({"client": ["10.77.0.2"], "mx": ["10.77.0.11"]})
    with net["mx"].entered():          # this thread is on host "mx" until the block ends:
        subprocess.Popen([...])        #   processes started here live there,
        socket.socket(...)             #   sockets made here belong there (and stay there)
    net["client"].connect("10.77.0.11", 25, source="10.77.0.2")
    net.close()                        # every host and the bridge are gone

Each host is a namespace held open by a `sleep` process (`unshare --net`), so nothing is named
under /var/run/netns and nothing outlives the holder: close() kills it, and the `sleep` itself
ends after HOLD_SECONDS should the test process die first. The bridge lives in a namespace of
its own ("switch"); a veth pair goes from each host's `eth0` to a port of that bridge. Both ends
are created directly in their namespaces, so the host's own network never sees an interface.
"""

import contextlib
import ctypes
import os
import socket
import subprocess
import time

CLONE_NEWNET = 0x40000000
# The holder processes end by themselves after this long, whatever happens to the test.
HOLD_SECONDS = 900
PREFIX_LEN = 24

_libc = ctypes.CDLL(None, use_errno=True)


def _setns(fd):
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        e = ctypes.get_errno()
        raise OSError(e, f"setns: {os.strerror(e)}")


def _require_root():
    if os.geteuid() != 0:
        raise RuntimeError("tests/cluster needs root (network namespaces): run it as root")


class Netns:
    """One network namespace, held open by a sleeping process."""

    def __init__(self, name):
        _require_root()
        self.name = name
        ours = os.readlink("/proc/self/ns/net")
        self.holder = subprocess.Popen(
            ["unshare", "--net", "--", "sleep", str(HOLD_SECONDS)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        self.path = f"/proc/{self.holder.pid}/ns/net"
        # unshare(2) runs after the fork: wait until the holder is in a namespace of its own.
        end = time.monotonic() + 10
        while True:
            try:
                if os.readlink(self.path) != ours:
                    break
            except FileNotFoundError:
                pass
            if self.holder.poll() is not None:
                raise RuntimeError(f"unshare --net failed: {self.holder.stderr.read().decode()}")
            if time.monotonic() > end:
                raise RuntimeError("unshare --net did not enter a new namespace within 10 s")
            time.sleep(0.005)
        self._fd = os.open(self.path, os.O_RDONLY)
        self.run("ip", "link", "set", "lo", "up")

    @property
    def pid(self):
        return self.holder.pid

    @contextlib.contextmanager
    def entered(self):
        """The calling thread is in this namespace inside the block (setns(2) moves one thread):
        processes it starts and sockets it makes belong to this host."""
        home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        try:
            _setns(self._fd)
            try:
                yield self
            finally:
                _setns(home)
        finally:
            os.close(home)

    def run(self, *cmd, check=True, timeout=30):
        """Runs a command on this host; returns its CompletedProcess (text)."""
        with self.entered():
            r = subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout,
                               stdin=subprocess.DEVNULL)
        if check and r.returncode != 0:
            raise RuntimeError(f"[{self.name}] {' '.join(cmd)}: exit {r.returncode}: {r.stderr}")
        return r

    def popen(self, cmd, **kw):
        """subprocess.Popen on this host."""
        with self.entered():
            return subprocess.Popen(cmd, **kw)

    def connect(self, addr, port, source=None, timeout=20.0):
        """A TCP connection made from this host (bound to `source` if given)."""
        with self.entered():
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            s.settimeout(timeout)
            if source:
                s.bind((source, 0))
            s.connect((addr, port))
            return s
        except BaseException:
            s.close()
            raise

    def close(self):
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self.holder.poll() is None:
            self.holder.kill()
        self.holder.wait(timeout=10)
        self.holder.stderr.close()


class Network:
    """Hosts on one bridge: `hosts` maps a name to its addresses (the first is its main one;
    all are on `eth0`, in one /24)."""

    def __init__(self, hosts):
        self.hosts = {}
        self.switch = Netns("switch")
        try:
            self.switch.run("ip", "link", "add", "br0", "type", "bridge", "forward_delay", "0")
            self.switch.run("ip", "link", "set", "br0", "up")
            for i, (name, addrs) in enumerate(hosts.items()):
                ns = Netns(name)
                self.hosts[name] = ns
                ns.addrs = list(addrs)
                port = f"p{i}"
                # Both ends made straight inside their namespaces (run from the host's stack:
                # `ip` only creates them, no packet goes through it).
                subprocess.run(
                    ["ip", "link", "add", port, "netns", str(self.switch.pid), "type", "veth",
                     "peer", "name", "eth0", "netns", str(ns.pid)],
                    check=True, capture_output=True, timeout=30,
                )
                self.switch.run("ip", "link", "set", port, "master", "br0", "up")
                for a in addrs:
                    ns.run("ip", "addr", "add", f"{a}/{PREFIX_LEN}", "dev", "eth0")
                ns.run("ip", "link", "set", "eth0", "up")
        except BaseException:
            self.close()
            raise

    def __getitem__(self, name):
        return self.hosts[name]

    def close(self):
        for ns in list(self.hosts.values()) + [self.switch]:
            ns.close()
        self.hosts = {}
