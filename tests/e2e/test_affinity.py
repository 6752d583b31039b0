"""`cpu_affinity steer`: connections whose SYNs are all processed on one CPU all reach the
worker on that CPU, and the server says so once in its log, naming the way out
(`cpu_affinity off`). On loopback a SYN is processed on the client's CPU, so a client pinned
to one CPU plays a network card with a single receive queue."""

import os
import subprocess
import sys

import pytest

# Over the watch's window (1,000 connections), so one window closes with them.
CONNECTIONS = 1_200
WARNING = "cpu_affinity steer: one worker took"

# Opens CONNECTIONS connections one after the other, each read up to its banner and closed.
CLIENT = """
import socket, sys
port, n = int(sys.argv[1]), int(sys.argv[2])
for _ in range(n):
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    banner = s.recv(512)
    assert banner.startswith(b"220"), banner
    s.close()
"""


def test_connections_from_one_cpu_are_reported_as_funnelled(make_server):
    allowed = sorted(os.sched_getaffinity(0))
    if len(allowed) < 2:
        pytest.skip("needs two CPUs to steer between")
    server = make_server(threads=2, settings={"cpu_affinity": "steer"})
    server.wait_log("cpu_affinity steer: workers on CPUs")
    # The client runs only on the second CPU the server's workers use.
    subprocess.run(
        ["taskset", "-c", str(allowed[1]), sys.executable, "-c", CLIENT, str(server.port),
         str(CONNECTIONS)],
        check=True, timeout=120,
    )
    server.wait_log(WARNING)
    line = next(l for l in server.log().splitlines() if WARNING in l)
    assert "100% of the last" in line, line
    assert "set cpu_affinity off" in line, line
