"""A private redis-server for the state store's tests (test_greylisting.py, test_karma.py):
TCP on a free loopback port and a Unix socket, no persistence, stopped by the fixture."""

import pathlib
import shutil
import socket
import subprocess

import pytest

from conftest import free_port, wait_for


def bulk_complete(data):
    """True once `data` holds a whole RESP bulk string (`$N\\r\\n` and N bytes, CRLF)."""
    end = data.find(b"\r\n")
    return end > 0 and len(data) >= end + 2 + int(data[1:end]) + 2


class RedisServer:
    """A private redis-server: TCP on a free port and a Unix socket, no persistence."""

    def __init__(self, base):
        self.dir = pathlib.Path(base)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.sock = self.dir / "redis.sock"
        self.proc = None
        self.counters = []

    def start(self):
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.fail("redis-server is not installed (tests/run installs it)")
        self.proc = subprocess.Popen(
            [binary, "--bind", "127.0.0.1", "--port", str(self.port), "--unixsocket", str(self.sock),
             "--unixsocketperm", "700", "--save", "", "--appendonly", "no", "--daemonize", "no",
             "--dir", str(self.dir)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        wait_for(self.ping, 20, "redis-server to answer PING", interval=0.05)
        return self

    def ping(self):
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=2) as s:
                s.sendall(b"*1\r\n$4\r\nPING\r\n")
                return s.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def keys(self):
        """Every key, as bytes (KEYS is fine on a test instance of a few keys)."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as s:
            s.sendall(b"*2\r\n$4\r\nKEYS\r\n$1\r\n*\r\n")
            data = b""
            s.settimeout(5)
            while True:
                data += s.recv(65536)
                header, _, rest = data.partition(b"\r\n")
                count = int(header[1:])
                items = []
                while rest.startswith(b"$"):
                    n_text, _, rest = rest.partition(b"\r\n")
                    n = int(n_text[1:])
                    if len(rest) < n + 2:
                        break
                    items.append(rest[:n])
                    rest = rest[n + 2:]
                if len(items) == count:
                    return items

    def reads_counter(self):
        """A function giving redis-server's `total_reads_processed` (its read events: a
        pipelined batch that arrives in one segment is one read, so the count of round trips),
        asked on one connection kept open, whose own INFO adds exactly one read per call."""
        s = socket.create_connection(("127.0.0.1", self.port), timeout=5)
        self.counters.append(s)

        def reads():
            s.sendall(b"*2\r\n$4\r\nINFO\r\n$5\r\nstats\r\n")
            data = b""
            while not bulk_complete(data):
                chunk = s.recv(65536)
                assert chunk, "redis-server closed the INFO connection"
                data += chunk
            for line in data.decode().splitlines():
                if line.startswith("total_reads_processed:"):
                    return int(line.split(":", 1)[1])
            raise AssertionError(f"no total_reads_processed in INFO stats: {data[:200]!r}")

        return reads

    def stop(self):
        for s in self.counters:
            s.close()
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


@pytest.fixture
def redis_server(tmp_path):
    r = RedisServer(tmp_path / "redis")
    yield r.start()
    r.stop()
