"""The spool directory after a crash: a server killed while it spools a message leaves the file
behind (nothing else can remove it); the next start removes every spool file whose process is
gone, and leaves those of a live process (another ringsmtpd on the same spool, a --stdio
session) and foreign files alone. So the garbage is bounded by one crash's messages in flight."""

import subprocess

from conftest import IO_TIMEOUT, wait_for

OPEN = b"EHLO probe.test\r\nMAIL FROM:<sender@client.test>\r\nRCPT TO:<rcpt@example.test>\r\nDATA\r\n"


def test_a_restart_removes_what_a_killed_server_spooled(make_server):
    server = make_server(settings={"size_threshold": 0})
    c = server.connect()
    c.send(OPEN)
    c.reply(), c.reply(), c.reply(), c.expect(354)
    c.send(b"Subject: cut off\r\n\r\n" + b"x" * 5000 + b"\r\n")
    [left] = wait_for(lambda: list(server.spool.iterdir()), IO_TIMEOUT, "the spool file")
    server.kill9()
    c.close()
    assert left.exists(), "kill -9 cannot have removed the spool file"
    assert left.name.startswith(f"{server.proc.pid}.")
    # A file of a process that runs (pid 1) and one that is not a spool file stay.
    live = server.spool / "1.1.1"
    live.write_text("a live process's message\n")
    foreign = server.spool / "README"
    foreign.write_text("not ours\n")
    # A process that has exited: its pid is free (unless taken again meanwhile, which only
    # keeps its file; the assertion below allows for that).
    gone = subprocess.Popen(["true"])
    gone.wait()
    dead = server.spool / f"{gone.pid}.7.1"
    dead.write_text("a dead process's message\n")

    # A fresh log (start() waits for its "listening on") and port (the killed one's client
    # connection may still hold the old one).
    server.logfile.unlink()
    server._pick_ports()
    server.start()
    assert not left.exists(), server.log()
    assert live.exists() and foreign.exists()
    removed = 1 if dead.exists() else 2
    assert f"removed {removed} spool files left by a stopped process" in server.log(), server.log()
    live.unlink()
    foreign.unlink()
