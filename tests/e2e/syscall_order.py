"""Reads an `strace -f -tt -yy` trace of a running server and checks the order of what one
delivery did (test_fsync_order.py): that the 250 after DATA was written to the client only
after the message was made durable.

`Tracer` attaches strace to a running server (all its threads, and threads and children started
later), `events()` turns its trace into `Event`s, and the checkers return a list of problems
(empty: the order is right), so a test can also show that a checker catches a trace that is
wrong.

A syscall that blocks shows as two lines (`<unfinished ...>`, `<... resumed>`): an event starts
at the first and ends at the second. The trace is in the order strace saw the syscalls enter
and leave the kernel, and a traced thread is stopped at each, so "A ended before B started" in
the trace means it did in the process. A syscall strace skipped (`-e inject=...`, shown as
`(INJECTED)`) did not happen: it never counts as done.
"""

import os
import re
import signal
import subprocess
import time
from dataclasses import dataclass, field

# What a delivery does, and how the reply reaches the client (the epoll driver: with io_uring
# the socket write is a submission, not a syscall strace can see).
TRACED = ("openat,open,write,writev,pwrite64,pwritev,pwritev2,sendto,sendmsg,fsync,fdatasync,"
          "link,linkat,rename,renameat,renameat2,unlink,unlinkat,execve,wait4,waitid,close,syncfs,"
          "sync_file_range")
WRITES = {"write", "writev", "pwrite64", "pwritev", "pwritev2", "sendto", "sendmsg"}
SYNCS = {"fsync", "fdatasync"}
LINKS = {"link", "linkat", "rename", "renameat", "renameat2"}

LINE = re.compile(r"^(\d+) +(\d\d:\d\d:\d\d\.\d+) (.*)$")
CALL = re.compile(r"^(\w+)\((.*)$")
RESUMED = re.compile(r"^<\.\.\. (\w+) resumed>(.*)$")
RESULT = re.compile(r"\) += (-?\w+)(?: (\w+ \(.*?\)))?(?: \((INJECTED|DELAYED)\))?\s*$")
EXITED = re.compile(r"^\+\+\+ exited with (\d+) \+\+\+$")
FD_PATH = re.compile(r"^(\d+)<(.*?)>")
QUOTED = re.compile(r'"((?:[^"\\]|\\.)*)"')


@dataclass
class Event:
    """One syscall (or a process's exit, name "exit"): lines [start, end] of the trace."""
    pid: int
    name: str
    args: str
    start: int
    end: int = -1
    ret: str = ""
    injected: bool = False

    @property
    def done(self):
        """It ran and succeeded."""
        return self.end >= 0 and not self.injected and self.ret not in ("", "?") and not self.ret.startswith("-")

    @property
    def fd_path(self):
        """The path (or socket) strace -y shows for the first argument, if it is a descriptor."""
        m = FD_PATH.match(self.args)
        return m.group(2) if m else ""

    @property
    def strings(self):
        """The quoted string arguments, unescaped enough for paths and reply text."""
        return [s.replace("\\r", "\r").replace("\\n", "\n").replace('\\"', '"') for s in QUOTED.findall(self.args)]

    def __str__(self):
        return f"[{self.start}-{self.end}] {self.pid} {self.name}({self.args[:120]}) = {self.ret}" + (
            " (INJECTED)" if self.injected else "")


def events(text):
    """The events of an strace -f -tt -yy trace, in order of their start."""
    out, pending = [], {}
    for i, raw in enumerate(text.splitlines()):
        m = LINE.match(raw)
        if not m:
            continue
        pid, rest = int(m.group(1)), m.group(3)
        if (ex := EXITED.match(rest)):
            out.append(Event(pid, "exit", "", i, i, ex.group(1)))
            continue
        if (res := RESUMED.match(rest)):
            ev = pending.pop(pid, None)
            if ev is not None and ev.name == res.group(1):
                ev.args += res.group(2)
                _finish(ev, i)
            continue
        if not (c := CALL.match(rest)):
            continue
        ev = Event(pid, c.group(1), c.group(2), i)
        out.append(ev)
        if rest.endswith("<unfinished ...>"):
            ev.args = ev.args[: -len("<unfinished ...>")].rstrip()
            pending[pid] = ev
        else:
            _finish(ev, i)
    return out


def _finish(ev, i):
    """The line `i` ends `ev`: its args end with `) = RESULT [ERRNO (text)] [(INJECTED)]`."""
    ev.end = i
    if (r := RESULT.search(ev.args)):
        ev.ret = r.group(1)
        ev.injected = r.group(3) == "INJECTED"
        ev.args = ev.args[: r.start()]


def reply_write(evs, code="250", containing="Queued"):
    """The first write to a TCP socket that sends the reply `code ...` with `containing` in it."""
    for e in evs:
        if e.name in WRITES and e.fd_path.startswith("TCP"):
            for s in e.strings:
                if s.startswith(f"{code} ") and containing in s:
                    return e
    return None


def check_maildir(evs, maildir):
    """Problems with the order of one delivery into the Maildir(s) under `maildir` (empty:
    durable before the 250). For every message file `.../tmp/NAME` written (one, or one per
    recipient with a subdir pattern):

    1. the file is written,
    2. then fsync'd (fsync or fdatasync, started after its last write, succeeded),
    3. then linked (or renamed) to `new/NAME` beside its `tmp/`,
    4. then that `new/` is fsync'd by an fsync that started after the link returned,
    5. and only after those fsyncs returned is `250 ... Queued` written to the client;

    or, on a Maildir that is its own filesystem, 2-4 are one `syncfs` of a directory above
    the file (the filesystem's root), started after the link returned (so after the last
    write), succeeded, and returned before the 250; and before the link, the file's data was
    written out: a `sync_file_range` starting its write after the last write, then one
    waiting for it (`SYNC_FILE_RANGE_WAIT_BEFORE`), both succeeded and returned before the link.
    """
    root = os.path.realpath(maildir)
    reply = reply_write(evs)
    if reply is None:
        return ["no 250 reply to DATA was written to the client"]
    files = []
    for e in evs:
        path = e.fd_path
        if e.name in WRITES and path.startswith(f"{root}/") and os.path.basename(os.path.dirname(path)) == "tmp":
            if path not in files:
                files.append(path)
    if not files:
        return [f"no write into a tmp/ under {root}"]
    return [p for tmp in files for p in _check_message_file(evs, tmp, reply)]


def _check_message_file(evs, tmp, reply):
    name = os.path.basename(tmp)
    new_dir = os.path.join(os.path.dirname(os.path.dirname(tmp)), "new")
    last_write = max(e.end for e in evs if e.name in WRITES and e.fd_path == tmp)
    link = _link(evs, name)
    if link is not None and link.done and last_write < link.start and _syncfs_between(evs, tmp, link, reply):
        if _written_out(evs, tmp, last_write, link):
            return []
        return [f"the data of {tmp} was not written out (sync_file_range, write then wait) before its link into new/"]
    problems = []
    fsync_file = next((e for e in evs if e.name in SYNCS and e.fd_path == tmp and e.start > last_write), None)
    if fsync_file is None:
        problems.append(f"no fsync of {tmp} after its last write")
    elif not fsync_file.done:
        problems.append(f"the fsync of the message file did not happen or failed: {fsync_file}")
    if link is None or not link.done:
        return problems + [f"no link of tmp/{name} into new/: {link}"]
    if fsync_file is not None and not fsync_file.end < link.start:
        problems.append(f"the message file was linked into new/ before its fsync returned: {fsync_file} / {link}")
    fsync_new = [e for e in evs if e.name in SYNCS and e.fd_path == new_dir and e.start > link.end]
    good = [e for e in fsync_new if e.done]
    if not fsync_new:
        problems.append(f"no fsync of {new_dir} started after the link")
    elif not good:
        problems.append(f"the fsync of new/ did not happen or failed: {fsync_new[0]}")
    elif not good[0].end < reply.start:
        problems.append(f"250 written before the fsync of new/ returned: {good[0]} / {reply}")
    if fsync_file is not None and fsync_file.done and not fsync_file.end < reply.start:
        problems.append(f"250 written before the fsync of the message file returned: {fsync_file} / {reply}")
    return problems


def _syncfs_between(evs, tmp, link, reply):
    """A successful syncfs of the filesystem above `tmp` (its descriptor a directory above
    it), started after `link` returned and returned before `reply` started."""
    return next((e for e in evs if e.name == "syncfs" and e.done and e.fd_path
                 and tmp.startswith(e.fd_path.rstrip("/") + "/")
                 and e.start > link.end and e.end < reply.start), None)


def _written_out(evs, tmp, last_write, link):
    """A successful sync_file_range starting the write of `tmp` after its last write, then a
    successful one waiting for it, returned before `link` started."""
    def ran(flag, after):
        return next((e for e in evs if e.name == "sync_file_range" and e.done and e.fd_path == tmp
                     and flag in e.args and e.start > after and e.end < link.start), None)
    started = ran("SYNC_FILE_RANGE_WRITE", last_write)
    return started is not None and ran("SYNC_FILE_RANGE_WAIT_BEFORE", started.end) is not None


def _link(evs, name):
    """The link (or rename) of tmp/NAME to new/NAME."""
    return next((e for e in evs if e.name in LINKS and len(e.strings) >= 2
                 and e.strings[0].endswith(f"tmp/{name}") and e.strings[1].endswith(f"new/{name}")), None)


QUEUED_NAME = re.compile(r"^250 .*Queued! (\S+)\r\n$")


def check_maildir_each(evs, maildir):
    """Several deliveries into `maildir` in one trace, of messages without a Message-ID (so the
    `250 ... Queued! NAME` reply names the file): {NAME: (problems, dir_fsync)} for every such
    reply, where problems are check_maildir's, each message checked against its own reply,
    and dir_fsync is the fsync of new/ that made its link durable (the first successful one
    started after the link; None if there is none): batched messages share it."""
    root = os.path.realpath(maildir)
    out = {}
    for reply in evs:
        if not (reply.name in WRITES and reply.fd_path.startswith("TCP")):
            continue
        for s in reply.strings:
            if not (m := QUEUED_NAME.match(s)):
                continue
            name = m.group(1)
            tmp = next((e.fd_path for e in evs if e.name in WRITES and e.fd_path.startswith(f"{root}/")
                        and e.fd_path.endswith(f"/tmp/{name}")), None)
            if tmp is None:
                out[name] = ([f"no write into tmp/{name}"], None)
                continue
            link = _link(evs, name)
            new_dir = os.path.join(os.path.dirname(os.path.dirname(tmp)), "new")
            dir_fsync = link and next((e for e in evs if e.name in SYNCS and e.fd_path == new_dir
                                       and e.start > link.end and e.done), None)
            out[name] = (_check_message_file(evs, tmp, reply), dir_fsync)
    return out


def check_child_then_reply(evs, program):
    """Problems with the order of a hand-over to `program` (qmail-queue and the like): it was
    executed, exited 0, and that exit (and our wait for it) came before the 250 was written."""
    reply = reply_write(evs)
    if reply is None:
        return ["no 250 reply to DATA was written to the client"]
    exe = next((e for e in evs if e.name == "execve" and e.strings and e.strings[0] == str(program) and e.done), None)
    if exe is None:
        return [f"{program} was never executed"]
    exit_ = next((e for e in evs if e.name == "exit" and e.pid == exe.pid), None)
    if exit_ is None:
        return [f"{program} (pid {exe.pid}) never exited in the trace"]
    problems = []
    if exit_.ret != "0":
        problems.append(f"{program} exited {exit_.ret}, yet 250 was written")
    if not exit_.end < reply.start:
        problems.append(f"250 written before {program} exited: {exit_} / {reply}")
    reaped = next((e for e in evs if e.name in ("wait4", "waitid") and str(exe.pid) in e.args + e.ret and e.done), None)
    if reaped is None:
        problems.append(f"the server never waited for {program} (pid {exe.pid})")
    elif not reaped.end < reply.start:
        problems.append(f"250 written before the server reaped {program}: {reaped} / {reply}")
    return problems


@dataclass
class Tracer:
    """strace attached to process `pid` and all its threads (and what they start later), writing
    its trace to `out`; extra strace arguments (e.g. `-e inject=fsync:retval=0`) in `extra`."""
    pid: int
    out: str
    extra: list = field(default_factory=list)
    proc: subprocess.Popen = None

    def __enter__(self):
        self.err = open(self.out + ".stderr", "w+")
        self.proc = subprocess.Popen(
            ["strace", "-f", "-tt", "-yy", "-s", "200", "-e", f"trace={TRACED}", *self.extra,
             "-o", self.out, "-p", str(self.pid)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=self.err)
        end = time.monotonic() + 20
        while time.monotonic() < end:
            with open(self.out + ".stderr") as f:
                # "Process N attached with M threads" once all of them are.
                if " attached" in f.read():
                    return self
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        self.__exit__()
        raise AssertionError(f"strace did not attach: {open(self.out + '.stderr').read()}")

    def __exit__(self, *exc):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # strace detaches and flushes its trace
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.err.close()

    def events(self):
        with open(self.out) as f:
            return events(f.read())
