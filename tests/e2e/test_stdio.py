"""--stdio: one session on stdin/stdout with the peer from tcpserver's environment, the way
tcpserver or inetd run it."""

import subprocess

from conftest import BINARY, check_delivered, dot_stuff, make_message, parse_replies, server_env

SENDER = "sender@client.test"
RCPT = "rcpt@example.test"


def run_stdio(srv, data, extra_env=None):
    env = server_env(srv.dir)
    env.update(
        TCPREMOTEIP="192.0.2.7", TCPREMOTEPORT="40001", TCPLOCALIP="198.51.100.1", TCPLOCALPORT="25"
    )
    env.update(extra_env or {})
    return subprocess.run(
        [str(BINARY), "--config", str(srv.cfg), "--stdio"],
        cwd=srv.dir,
        env=env,
        input=data,
        capture_output=True,
        timeout=60,
    )


def test_stdio_session_delivers_with_tcpremoteip(make_server):
    srv = make_server(start=False)
    msg = make_message("over stdio", ["from tcpserver", ".dotted"])
    session = (
        b"EHLO stdio.test\r\nMAIL FROM:<sender@client.test>\r\nRCPT TO:<rcpt@example.test>\r\n"
        b"DATA\r\n" + dot_stuff(msg) + b"QUIT\r\n"
    )
    r = run_stdio(srv, session)
    assert r.returncode == 0, r.stderr
    replies = parse_replies(r.stdout)
    assert [x.code for x in replies] == [220, 250, 250, 250, 354, 250, 221], (r.stdout, r.stderr)
    assert "[192.0.2.7]" in replies[1].lines[0]
    assert b"listening" not in r.stdout  # logs go to stderr, never into the SMTP stream
    check_delivered(srv.maildir.only(), SENDER, [RCPT], msg, ip="192.0.2.7", helo="stdio.test")


def test_stdio_client_eof_mid_data_delivers_nothing(make_server):
    srv = make_server(start=False)
    session = (
        b"EHLO stdio.test\r\nMAIL FROM:<sender@client.test>\r\nRCPT TO:<rcpt@example.test>\r\n"
        b"DATA\r\nSubject: cut\r\n\r\nno end\r\n"
    )
    r = run_stdio(srv, session)
    replies = parse_replies(r.stdout)
    assert [x.code for x in replies] == [220, 250, 250, 250, 354], (r.stdout, r.stderr)
    srv.maildir.assert_empty()


def test_stdio_bare_lf_refused(make_server):
    srv = make_server(start=False)
    r = run_stdio(srv, b"EHLO stdio.test\nQUIT\r\n")
    replies = parse_replies(r.stdout)
    assert [x.code for x in replies] == [220, 521], r.stdout
