"""Durability a test can prove (docs/architecture.md, Durability): the kill -9 tests keep the page
cache, so they would pass without a single fsync. Here strace records the syscalls of a real
delivery and syscall_order.py checks their order: for queue/maildir the message file is written,
fsync'd, linked into new/, new/ is fsync'd, and only then is the 250 written to the client; for
a queue plugin that hands the message to a program (queue/qmail-queue, queue/exim-bsmtp) the
program has exited 0 and been reaped before the 250: the program's own fsyncs are its business.

Each check is shown to fail on a trace that lacks what it checks: strace skips every fsync
(`-e inject=fsync:retval=0`: the fsync never reaches the kernel, as in a build without it), or
fails them (`error=EIO`: the server must answer 4xx, not 250), and traces edited to drop an
fsync or move the reply earlier.

The server runs the epoll driver: with io_uring the reply is a ring submission, not a write(2)
strace can place. queue/maildir is the only queue plugin that writes files itself
(plugins/src/queue/); queue/postfix-queue talks to Postfix's cleanup service over a socket and
answers 250 only on its `status=0` (test_queues.py, with a real Postfix); docs/architecture.md
says what durability means for each.
"""

import dataclasses
import shutil
import subprocess

import pytest

from conftest import make_message, send_message
from conftest import dot_stuff
from syscall_order import (SYNCS, Tracer, check_child_then_reply, check_maildir, check_maildir_each, events,
                           reply_write)

RCPT = "rcpt@example.test"


@pytest.fixture(autouse=True)
def need_strace():
    if shutil.which("strace") is None:
        pytest.fail("strace is not installed (tests/run installs it): the fsync order cannot be checked")


def traced_delivery(server, tmp_path, name, extra=(), rcpts=(RCPT,)):
    """One message delivered while strace traces the server: (the reply to DATA, the events)."""
    with Tracer(server.proc.pid, str(tmp_path / f"{name}.trace"), list(extra)) as tracer:
        reply = send_message(server, list(rcpts), make_message(name, ["durable?"]))
    return reply, tracer.events()


def maildir_server(make_server):
    return make_server(extra_args=["--driver", "epoll"])


def test_maildir_250_only_after_file_and_new_dir_fsync(make_server, tmp_path):
    server = maildir_server(make_server)
    reply, evs = traced_delivery(server, tmp_path, "ordered")
    assert reply.code == 250, reply
    assert check_maildir(evs, server.maildir.path) == []
    assert len(server.maildir.files("new")) == 1

    # The same trace with one step taken away or moved is refused by the checker: the test is
    # not true of any trace.
    def problems_without(pred):
        return check_maildir([e for e in evs if not pred(e)], server.maildir.path)

    new_dir = f"{server.maildir.path.resolve()}/new"
    assert any("fsync of new/" in p or "no fsync of" in p
               for p in problems_without(lambda e: e.name == "fsync" and e.fd_path == new_dir))
    assert any("no fsync of" in p and "/Maildir/tmp/" in p
               for p in problems_without(lambda e: e.name in ("fsync", "fdatasync") and "/tmp/" in e.fd_path))
    reply_ev = next(e for e in evs if e.name in ("write", "sendto", "writev", "sendmsg")
                    and e.fd_path.startswith("TCP") and any(s.startswith("250 ") and "Queued" in s for s in e.strings))
    dir_sync = next(e for e in evs if e.name == "fsync" and e.fd_path == new_dir and e.done)
    early = [dataclasses.replace(e, start=dir_sync.start - 1) if e is reply_ev else e for e in evs]
    assert any("250 written before the fsync of new/" in p for p in check_maildir(early, server.maildir.path))


def test_maildir_per_recipient_every_file_and_new_dir_fsyncd_before_250(make_server, tmp_path):
    # With a subdir pattern each recipient has its own Maildir: every file and every new/.
    server = make_server(plugins=["rcpt_ok", "queue/maildir {maildir} %l"], extra_args=["--driver", "epoll"])
    rcpts = ["alice@example.test", "bob@example.test"]
    reply, evs = traced_delivery(server, tmp_path, "per-rcpt", rcpts=rcpts)
    assert reply.code == 250, reply
    assert check_maildir(evs, server.maildir.path) == []
    for user in ("alice", "bob"):
        assert len(list((server.maildir.path / user / "new").iterdir())) == 1, user
    # Without bob's new/ fsync the checker objects (naming bob's Maildir only).
    bob_new = f"{server.maildir.path.resolve()}/bob/new"
    problems = check_maildir([e for e in evs if not (e.name == "fsync" and e.fd_path == bob_new)],
                             server.maildir.path)
    assert problems and all("/bob/" in p for p in problems), problems


def test_maildir_checker_catches_a_server_whose_fsyncs_do_nothing(make_server, tmp_path):
    server = maildir_server(make_server)
    # strace answers every fsync with 0 without running it: the server cannot tell, and answers
    # 250 with nothing on disk for sure. The checker must see it.
    reply, evs = traced_delivery(server, tmp_path, "skipped", ["-e", "inject=fsync,fdatasync:retval=0"])
    assert reply.code == 250, reply
    problems = check_maildir(evs, server.maildir.path)
    assert any("fsync of the message file did not happen" in p for p in problems), problems
    assert any("fsync of new/ did not happen" in p for p in problems), problems


def test_maildir_failed_fsync_is_4xx_never_250(make_server, tmp_path):
    server = maildir_server(make_server)
    reply, evs = traced_delivery(server, tmp_path, "eio", ["-e", "inject=fsync,fdatasync:error=EIO"])
    assert 400 <= reply.code < 500 and reply.enhanced().startswith("4."), reply
    assert check_maildir(evs, server.maildir.path) == ["no 250 reply to DATA was written to the client"]
    assert server.maildir.files("new") == [], "a message whose fsync failed is left in new/"


def test_maildir_batch_every_250_after_one_shared_new_dir_fsync_after_all_file_fsyncs(make_server, tmp_path):
    # Group commit: messages that end while a commit runs on their worker are committed
    # together. One worker; strace holds every fsync 300 ms, so while the first message's
    # commit waits in its fsyncs the other messages end their DATA and queue behind it.
    server = make_server(threads=1, extra_args=["--driver", "epoll"])
    n = 5
    clients = [server.connect() for _ in range(n)]
    try:
        for i, c in enumerate(clients):
            c.ehlo("client.test")
            c.start_data("sender@client.test", [RCPT])
            # No Message-ID: the 250 names the file, which ties each reply to its file.
            c.send(dot_stuff(make_message(f"batch {i}", ["durable?"]))[: -len(b".\r\n")])
        with Tracer(server.proc.pid, str(tmp_path / "batch.trace"),
                    ["-e", "inject=fsync:delay_exit=300000"]) as tracer:
            for c in clients:
                c.send(b".\r\n")
            replies = [c.reply() for c in clients]
    finally:
        for c in clients:
            c.close()
    assert all(r.code == 250 for r in replies), replies
    evs = tracer.events()
    each = check_maildir_each(evs, server.maildir.path)
    assert len(each) == n, each.keys()
    assert {name: problems for name, (problems, _) in each.items() if problems} == {}
    assert len(server.maildir.files("new")) == n

    # Several messages were answered after one shared fsync of new/, which started after
    # every one of their file fsyncs had returned.
    by_fsync = {}
    for name, (_, dir_fsync) in each.items():
        by_fsync.setdefault(dir_fsync.start, []).append(name)
    shared_start, shared = max(by_fsync.items(), key=lambda kv: len(kv[1]))
    assert len(shared) >= 2, by_fsync
    root = str(server.maildir.path.resolve())
    for name in shared:
        tmp = f"{root}/tmp/{name}"
        file_sync = next(e for e in evs if e.name == "fsync" and e.fd_path == tmp)
        assert file_sync.done and file_sync.end < shared_start, (name, file_sync)

    # The checker refuses the same trace without the fsyncs of new/ (every message: without
    # only the shared one, a later batch's fsync of new/ may still come before a reply, as the
    # two commit jobs of a worker overlap), or without one message's file fsync (that message).
    without_shared = check_maildir_each(
        [e for e in evs if not (e.name in SYNCS and e.fd_path == f"{root}/new")], server.maildir.path)
    for name in shared:
        problems, _ = without_shared[name]
        assert any("fsync of new/" in p or f"no fsync of {root}/new" in p for p in problems), (name, problems)
    victim = shared[0]
    without_file = check_maildir_each(
        [e for e in evs if not (e.name == "fsync" and e.fd_path == f"{root}/tmp/{victim}")], server.maildir.path)
    assert any("no fsync of" in p and f"/tmp/{victim}" in p for p in without_file[victim][0]), without_file[victim]
    assert all(not p for name, (p, _) in without_file.items() if name != victim)


@pytest.fixture
def own_filesystem(tmp_path):
    """own_filesystem(path): mounts a fresh ext4 filesystem (a loop-mounted image file under
    tmp_path) at `path`; unmounted at the end of the test, after the servers stopped (this
    fixture is set up before make_server, so it is torn down after it)."""
    if shutil.which("mkfs.ext4") is None or shutil.which("mount") is None:
        pytest.fail("mkfs.ext4 and mount are needed (e2fsprogs, mount)")
    mounted = []

    def mount(path):
        image = tmp_path / f"fs{len(mounted)}.img"
        subprocess.run(["truncate", "-s", "64M", str(image)], check=True, timeout=30)
        subprocess.run(["mkfs.ext4", "-q", "-F", str(image)], check=True, timeout=60)
        path.mkdir(parents=True, exist_ok=True)
        r = subprocess.run(["mount", "-o", "loop", str(image), str(path)], capture_output=True, timeout=60)
        if r.returncode != 0:
            pytest.fail(f"cannot loop-mount a filesystem (root is needed): {r.stderr!r}")
        mounted.append(path)

    yield mount
    for path in mounted:
        subprocess.run(["umount", str(path)], timeout=60)


def maildir_on_its_own_filesystem(own_filesystem, make_server):
    server = make_server(start=False, extra_args=["--driver", "epoll"])
    own_filesystem(server.maildir.path)
    server.start()
    return server


def test_maildir_on_its_own_filesystem_250_only_after_a_syncfs_after_the_link(own_filesystem, make_server,
                                                                              tmp_path):
    server = maildir_on_its_own_filesystem(own_filesystem, make_server)
    reply, evs = traced_delivery(server, tmp_path, "syncfs", rcpts=[RCPT, "other@example.test"])
    assert reply.code == 250, reply
    assert check_maildir(evs, server.maildir.path) == []
    assert len(server.maildir.files("new")) == 1
    root = str(server.maildir.path.resolve())
    # The syncfs did the work: no fsync of the message file or of new/ at all.
    assert [e for e in evs if e.name == "syncfs" and e.fd_path == root and e.done], "no syncfs of the Maildir"
    assert not [e for e in evs if e.name in SYNCS and e.fd_path.startswith(root)]

    # The checker refuses the trace without the syncfs, without the data written out before
    # the rename, or with the 250 written before the syncfs ended.
    no_syncfs = check_maildir([e for e in evs if e.name != "syncfs"], server.maildir.path)
    assert any("no fsync of" in p for p in no_syncfs), no_syncfs
    for flag in ("SYNC_FILE_RANGE_WRITE", "SYNC_FILE_RANGE_WAIT_BEFORE"):
        without = [e for e in evs if not (e.name == "sync_file_range" and flag in e.args)]
        problems = check_maildir(without, server.maildir.path)
        assert any("was not written out" in p for p in problems), (flag, problems)
    syncfs = next(e for e in evs if e.name == "syncfs" and e.fd_path == root)
    reply_ev = next(e for e in evs if e.name in ("write", "sendto", "writev", "sendmsg")
                    and e.fd_path.startswith("TCP") and any(s.startswith("250 ") and "Queued" in s for s in e.strings))
    early = [dataclasses.replace(e, start=syncfs.end - 1) if e is reply_ev else e for e in evs]
    assert check_maildir(early, server.maildir.path) != []


def test_maildir_on_its_own_filesystem_failed_write_out_is_4xx_never_250(own_filesystem, make_server,
                                                                           tmp_path):
    server = maildir_on_its_own_filesystem(own_filesystem, make_server)
    reply, evs = traced_delivery(server, tmp_path, "sfr-eio", ["-e", "inject=sync_file_range:error=EIO"])
    assert 400 <= reply.code < 500 and reply.enhanced().startswith("4."), reply
    assert check_maildir(evs, server.maildir.path) == ["no 250 reply to DATA was written to the client"]
    assert server.maildir.files("new") == [] and server.maildir.files("tmp") == []
    server.wait_log("sync_file_range")


def test_maildir_on_its_own_filesystem_failed_syncfs_is_4xx_never_250(own_filesystem, make_server, tmp_path):
    server = maildir_on_its_own_filesystem(own_filesystem, make_server)
    reply, evs = traced_delivery(server, tmp_path, "syncfs-eio", ["-e", "inject=syncfs:error=EIO"])
    assert 400 <= reply.code < 500 and reply.enhanced().startswith("4."), reply
    assert check_maildir(evs, server.maildir.path) == ["no 250 reply to DATA was written to the client"]
    assert server.maildir.files("new") == [], "a message whose syncfs failed is left in new/"


# TEST PROGRAMS, not qmail or Exim: each reads what the plugin writes (qmail-queue: the message
# on fd 0, the envelope on fd 1; exim -bS: batched SMTP on stdin) and exits with the code in the
# file `code` beside it.
FAKES = {
    "qmail-queue": '#!/bin/sh\ncat >/dev/null\ncat <&1 >/dev/null\nexit "$(cat "$(dirname "$0")/code")"\n',
    "exim-bsmtp": '#!/bin/sh\n[ "$1" = -bS ] || exit 64\ncat >/dev/null\nexit "$(cat "$(dirname "$0")/code")"\n',
}


@pytest.mark.parametrize("plugin", sorted(FAKES))
def test_handover_250_only_after_the_program_exited_0(make_server, tmp_path, plugin):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    prog = bin_dir / plugin
    prog.write_text(FAKES[plugin])
    prog.chmod(0o755)
    (bin_dir / "code").write_text("0")
    server = make_server(plugins=["rcpt_ok", f"queue/{plugin} {prog} timeout 10"],
                         extra_args=["--driver", "epoll"])
    reply, evs = traced_delivery(server, tmp_path, "handed-over")
    assert reply.code == 250, reply
    assert check_child_then_reply(evs, prog) == []

    # The checker refuses a trace where the 250 comes before the exit, or the exit is not 0.
    exit_ev = next(e for e in evs if e.name == "exit" and e.ret == "0"
                   and any(x.name == "execve" and x.pid == e.pid and x.strings[:1] == [str(prog)] for x in evs))
    moved = [dataclasses.replace(e, start=10**9, end=10**9) if e is exit_ev else e for e in evs]
    assert any("250 written before" in p for p in check_child_then_reply(moved, prog))
    failed = [dataclasses.replace(e, ret="71") if e is exit_ev else e for e in evs]
    assert any("exited 71" in p for p in check_child_then_reply(failed, prog))

    # A program that exits non-zero gets no 250 at all.
    (bin_dir / "code").write_text("71")
    reply, evs = traced_delivery(server, tmp_path, "refused")
    assert reply.code == 451, reply
    assert check_child_then_reply(evs, prog) == ["no 250 reply to DATA was written to the client"]


def test_trace_reader_joins_interrupted_syscalls_and_marks_skipped_ones():
    # Two threads: the fsync blocks (unfinished), the worker's write of the 250 comes in
    # between, then the fsync returns: the write started before the fsync ended.
    trace = "\n".join([
        '100 10:00:00.000001 write(7</m/tmp/x>, "Subject: a\\n", 11) = 11',
        '100 10:00:00.000002 fsync(7</m/tmp/x> <unfinished ...>',
        '99 10:00:00.000003 sendto(5<TCP:[127.0.0.1:25->127.0.0.1:4000]>, "250 2.0.0 Queued! x\\r\\n", 21, MSG_NOSIGNAL, NULL, 0) = 21',
        '100 10:00:00.000004 <... fsync resumed>) = 0',
        '100 10:00:00.000005 fsync(8</m/new>) = 0 (INJECTED)',
        '100 10:00:00.000006 fsync(8</m/new>) = -1 EIO (Input/output error)',
        '101 10:00:00.000007 +++ exited with 3 +++',
    ])
    evs = events(trace)
    fsync = evs[1]
    assert (fsync.name, fsync.fd_path, fsync.start, fsync.end, fsync.ret, fsync.done) == ("fsync", "/m/tmp/x", 1, 3, "0", True)
    reply = reply_write(evs)
    assert reply is evs[2] and reply.start < fsync.end
    assert reply.strings[0] == "250 2.0.0 Queued! x\r\n"
    assert not evs[3].done and evs[3].injected, "a syscall strace skipped did not happen"
    assert not evs[4].done and evs[4].ret == "-1"
    assert (evs[5].name, evs[5].pid, evs[5].ret) == ("exit", 101, "3")
