"""swaks, the SMTP test tool, as a client: a plain send and a pipelined one."""

import shutil
import subprocess

import pytest

from conftest import check_delivered

SENDER = "swaks@client.test"
RCPT = "rcpt@example.test"


def swaks():
    path = shutil.which("swaks")
    if not path:
        pytest.fail("swaks is not installed: `apt-get install swaks` (tests/run installs it)")
    return path


def body_of(marker):
    return f"Subject: {marker}\r\nX-Test-Id: {marker}\r\n\r\nswaks body {marker}\r\n..leading dot"


@pytest.mark.parametrize("pipeline", [False, True], ids=["plain", "pipeline"])
def test_swaks_send(server, pipeline, tmp_path):
    marker = f"swaks-{'pipe' if pipeline else 'plain'}"
    data = body_of(marker)
    args = [
        swaks(), "--server", f"127.0.0.1:{server.port}", "--helo", "swaks.test",
        "--from", SENDER, "--to", RCPT, "--data", data, "--timeout", "20",
    ]
    if pipeline:
        args.append("--pipeline")
    r = subprocess.run(args, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "250 2.0.0 Queued!" in r.stdout
    if pipeline:
        # swaks sent MAIL, RCPT and DATA in one batch.
        assert "MAIL FROM:<swaks@client.test>\n -> RCPT TO:<rcpt@example.test>\n -> DATA" in r.stdout, r.stdout
    f = server.maildir.only()
    # swaks sends --data as given (dot-stuffed on the wire) and ends it with CRLF . CRLF.
    check_delivered(f, SENDER, [RCPT], data.encode() + b"\r\n", helo="swaks.test")
