"""Privilege drop (docs/deploy.md, "Privileges"): started as root with `user`/`group` naming an
unprivileged account, the server binds, creates its Maildir and spool owned by that account,
drops, and then every thread of the process (workers, their blocking pools, the logging and
metrics threads started before the drop) runs as that account, as /proc/PID/task/*/status
shows; mail is still delivered. Started as root without `user`, it refuses with the fix.

These tests need root (the project's CI runs as root): run as anyone else they are skipped,
with the reason, never passed."""

import grp
import os
import pathlib
import pwd
import shutil
import socket
import subprocess

import pytest

from conftest import (
    BINARY,
    IO_TIMEOUT,
    Server,
    free_port,
    make_message,
    private_dir,
    send_message,
    server_env,
    wait_for,
)

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0, reason="needs root: it starts the server as root to watch it drop privileges"
)

RCPT = "rcpt@example.test"


def unprivileged():
    """`nobody` and its group: an account every Debian has."""
    try:
        user = pwd.getpwnam("nobody")
    except KeyError:
        pytest.fail("no user 'nobody' on this system (it is in Debian's base-passwd)")
    return user.pw_uid, user.pw_gid, grp.getgrgid(user.pw_gid).gr_name


def thread_ids(pid):
    """{tid: (name, [4 uids], [4 gids])} for every thread of `pid`."""
    out = {}
    for task in pathlib.Path(f"/proc/{pid}/task").iterdir():
        try:
            status = (task / "status").read_text()
        except FileNotFoundError:  # the thread ended meanwhile
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        out[task.name] = (
            fields["Name"].strip(),
            [int(x) for x in fields["Uid"].split()],
            [int(x) for x in fields["Gid"].split()],
        )
    return out


@pytest.fixture
def base():
    """A directory `nobody` can traverse (pytest's tmp dirs are root's only)."""
    d = private_dir("ringsmtpd-priv")
    yield d
    shutil.rmtree(d, ignore_errors=True)


def test_every_thread_runs_as_the_configured_user_and_mail_is_delivered(base):
    uid, gid, group = unprivileged()
    metrics = free_port()
    srv = Server(base / "srv", threads=2, settings={
        "user": "nobody",
        "group": group,
        "size_threshold": 0,  # every message goes through the spool: written after the drop
        "metrics": f"127.0.0.1:{metrics}",  # its thread starts before the drop
    })
    logs = base / "logs"
    logs.mkdir()
    os.chown(logs, uid, gid)
    # A logging sink thread exists before the drop too.
    (srv.cfg / "logging").write_text(f"logging/file loglevel LOGINFO {logs}/mail.log\n")
    try:
        srv.start()
        pid = srv.proc.pid
        assert f"running as nobody:{group} (uid {uid}, gid {gid})" in srv.log(), srv.log()

        def check_threads(when):
            threads = thread_ids(pid)
            names = sorted(name for name, _, _ in threads.values())
            for tid, (name, uids, gids) in threads.items():
                # Real, effective, saved and filesystem ids, on every thread.
                assert uids == [uid] * 4, f"{when}: thread {tid} ({name}) uids {uids}"
                assert gids == [gid] * 4, f"{when}: thread {tid} ({name}) gids {gids}"
            return names

        names = check_threads("after start")
        # The threads that exist: both workers, the metrics listener, the log writer.
        for expected in ("ringsmtpd-w0", "ringsmtpd-w1", "ringsmtpd-metri", "log file:"):
            assert any(n.startswith(expected) for n in names), (expected, names)

        for i in range(4):
            reply = send_message(srv, [RCPT], make_message(f"privileges {i}", ["hello"] * 10))
            assert reply.code == 250, reply
        srv.maildir.wait_count(4)
        # The blocking pools ran the spool and Maildir I/O: those threads too.
        after = check_threads("after deliveries")
        print("threads after start:", names, "after deliveries:", after)

        for path in [srv.maildir.path, srv.maildir.path / "new", srv.spool, *srv.maildir.files("new")]:
            st = path.stat()
            assert (st.st_uid, st.st_gid) == (uid, gid), f"{path} owned by {st.st_uid}:{st.st_gid}"
        wait_for(lambda: (logs / "mail.log").exists() and "queued" in (logs / "mail.log").read_text(),
                 IO_TIMEOUT, "the log file")
        assert (logs / "mail.log").stat().st_uid == uid
    finally:
        srv.close()
    assert srv.proc.returncode == 0, srv.log()


def run_binary(args, cwd):
    return subprocess.run([str(BINARY)] + args, cwd=cwd, env=server_env(cwd), stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=30)


def test_root_without_user_is_refused_with_the_fix(base):
    srv = Server(base / "srv")
    (srv.cfg / "user").unlink()
    for args in ([], ["--check"]):
        r = run_binary(["--config", str(srv.cfg), "--listen", f"127.0.0.1:{srv.port}"] + args, srv.dir)
        assert r.returncode == 1, (args, r.stdout, r.stderr)
        assert "refusing to run as root" in r.stderr, r.stderr
        assert f"{srv.cfg}/user" in r.stderr and "--user NAME" in r.stderr, r.stderr
        assert f"write `root` into {srv.cfg}/user" in r.stderr, r.stderr
        assert "is valid" not in r.stdout
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", srv.port), timeout=5)
    # --user on the command line is enough, and overrides the file.
    (srv.cfg / "user").write_text("root\n")
    r = run_binary(["--config", str(srv.cfg), "--check", "--user", "nobody"], srv.dir)
    assert r.returncode == 0, r.stderr
    assert "\nruns as nobody:" in r.stdout, r.stdout


def test_a_maildir_the_user_cannot_write_stops_the_start(base):
    _, _, group = unprivileged()
    srv = Server(base / "srv", settings={"user": "nobody", "group": group})
    srv.maildir.path.mkdir(mode=0o700)  # root's, made before: not given away
    r = run_binary(["--config", str(srv.cfg), "--listen", f"127.0.0.1:{srv.port}"], srv.dir)
    assert r.returncode == 1, r.stderr
    assert f"nobody cannot write {srv.maildir.path}" in r.stderr, r.stderr
    assert f"chown -R nobody:{group} {srv.maildir.path}" in r.stderr, r.stderr
