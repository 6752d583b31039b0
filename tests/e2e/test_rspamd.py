"""The rspamd plugin end to end: the release binary against a real rspamd (Debian's `rspamd`)
with a private config (/etc/rspamd's defaults included, nothing there changed) whose DNS is the
test Knot server of tests/dns/server.py, so ordinary mail gets clean results.

GTUBE is rejected with 550 5.7.1 (in memory and spooled); a clean message is delivered with the
plugin's headers and rspamd's milter block applied (its milter_headers module adds X-Spamd-Bar
and removes the one the message came with); rspamd stopped -> 451 4.7.1 (the default error policy), never a 250 for an unscanned message.
Deadlines only bound a hang (rspamd can take 10+ s to listen on a loaded machine).
"""

import http.client
import importlib.util
import os
import shutil
import signal
import subprocess

import pytest

from conftest import ROOT, free_ports, make_message, private_dir, send_message, wait_for

_spec = importlib.util.spec_from_file_location("dns_test_server", ROOT / "tests" / "dns" / "server.py")
dns_server = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(dns_server)

RSPAMD = shutil.which("rspamd") or "/usr/bin/rspamd"
START_DEADLINE = 90.0
GTUBE = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"
RCPT = "rcpt@example.test"


class Rspamd:
    """A private rspamd: normal and controller workers on free loopback ports."""

    def __init__(self, dns_port):
        if not os.path.exists(RSPAMD):
            pytest.fail("rspamd is not installed: apt-get install rspamd (tests/run does)")
        self.base = private_dir("ringsmtpd-rspamd-")
        self.port, self.controller = free_ports(2)
        for sub in ("db", "run", "log", "local"):
            (self.base / sub).mkdir()
            shutil.chown(self.base / sub, "_rspamd", "_rspamd")
        # rspamd's milter_headers module, so that its answer has a milter block to apply:
        # X-Spamd-Bar added, and every X-Spamd-Bar the message came with removed.
        (self.base / "local" / "local.d").mkdir()
        (self.base / "local" / "local.d" / "milter_headers.conf").write_text(
            'use = ["x-spamd-bar"];\nskip_local = false;\n'
        )
        self.conf = self.base / "rspamd.conf"
        self.conf.write_text(
            '.include "$CONFDIR/common.conf"\n'
            'options { pidfile = "$RUNDIR/rspamd.pid"; .include "$CONFDIR/options.inc"\n'
            f'  dns {{ nameserver = ["127.0.0.1:{dns_port}"]; timeout = 1s; retransmits = 1; }} }}\n'
            'logging { type = "console"; level = "info"; }\n'
            f'worker "normal" {{ bind_socket = "127.0.0.1:{self.port}"; '
            '.include "$CONFDIR/worker-normal.inc"; count = 1; }\n'
            f'worker "controller" {{ bind_socket = "127.0.0.1:{self.controller}"; '
            '.include "$CONFDIR/worker-controller.inc"; count = 1; }\n'
        )
        self.logfile = self.base / "rspamd.log"
        self.proc = None

    def start(self):
        b = self.base
        self._log = open(self.logfile, "ab")
        self.proc = subprocess.Popen(
            [RSPAMD, "-f", "-u", "_rspamd", "-g", "_rspamd", "-c", str(self.conf),
             "--var", f"DBDIR={b}/db", "--var", f"RUNDIR={b}/run", "--var", f"LOGDIR={b}/log",
             "--var", f"LOCAL_CONFDIR={b}/local"],
            stdin=subprocess.DEVNULL, stdout=self._log, stderr=self._log,
            start_new_session=True,  # its workers share the group: stopped together
        )

        def up():
            if self.proc.poll() is not None:
                pytest.fail(f"rspamd exited {self.proc.returncode}:\n{self.log()[-3000:]}")
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
            try:
                conn.request("GET", "/ping")
                return b"pong" in conn.getresponse().read()
            except OSError:
                return False
            finally:
                conn.close()

        wait_for(up, START_DEADLINE, "rspamd to answer /ping", interval=0.5)
        return self

    def log(self):
        return self.logfile.read_text(errors="replace")

    def stop(self):
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        self._log.close()

    def remove(self):
        self.stop()
        shutil.rmtree(self.base, ignore_errors=True)


@pytest.fixture(scope="module")
def knot():
    k = dns_server.start_knot()
    try:
        yield k
    finally:
        k.stop()


@pytest.fixture(scope="module")
def rspamd(knot):
    r = Rspamd(knot.port).start()
    try:
        yield r
    finally:
        r.remove()


def plugins(port, extra=""):
    # The client is 127.0.0.1, a private address: scanned only when asked.
    return ["rcpt_ok", f"rspamd port {port} check_private_ip 1 timeout 20 {extra}".strip(),
            "queue/maildir {maildir}"]


@pytest.mark.parametrize("spooled", [False, True], ids=["in-memory", "spooled"])
def test_gtube_is_rejected(make_server, rspamd, spooled):
    # size_threshold 1024: the message goes to a spool file, streamed to rspamd from there.
    settings = {"size_threshold": 1024} if spooled else None
    srv = make_server(plugins=plugins(rspamd.port), settings=settings)
    filler = [f"line {i} of some text before the test pattern" for i in range(60)]  # rspamd looks for GTUBE in text parts under 4 KiB
    reply = send_message(srv, [RCPT], make_message("gtube", filler + [GTUBE]))
    assert (reply.code, reply.enhanced()) == (550, "5.7.1"), reply
    assert "Gtube pattern" in reply.text, reply
    srv.maildir.assert_empty()
    srv.wait_log("reject: score")


def test_clean_message_is_delivered_with_headers(make_server, rspamd):
    srv = make_server(plugins=plugins(rspamd.port))
    msg = make_message("lunch", ["Shall we meet at noon tomorrow?", "Bob"],
                       ["Date: Fri, 04 Dec 2026 12:00:00 +0000", "Message-ID: <lunch.1@client.test>",
                        "X-Spamd-Bar: forged"])
    reply = send_message(srv, [RCPT], msg)
    assert reply.code == 250, reply
    delivered = srv.maildir.wait_count(1)[0].decode(errors="replace")
    head = delivered.split("\n\n", 1)[0]
    assert "\nX-Spam-Status: No, score=" in head, head
    assert "\nX-Rspamd-Score: " in head and "\nX-Rspamd-Bar: " in head, head
    assert "\nX-Spam: Yes" not in head, head
    # rspamd saw the envelope: its From and Rcpt request headers match the message's.
    assert "FROM_EQ_ENVFROM" in head and "TO_MATCH_ENVRCPT_ALL" in head, head
    # rspamd's milter block: its X-Spamd-Bar added, the one the message came with removed.
    assert "\nX-Spamd-Bar: " in head and "forged" not in head, head
    assert "Shall we meet at noon tomorrow?" in delivered


def test_rspamd_stopped_defers(make_server, knot):
    r = Rspamd(knot.port).start()
    try:
        srv = make_server(plugins=plugins(r.port))
        msg = make_message("before", ["hello"])
        assert send_message(srv, [RCPT], msg).code == 250
        r.stop()
        reply = send_message(srv, [RCPT], make_message("after", ["hello"]))
        assert (reply.code, reply.enhanced()) == (451, "4.7.1"), reply
        assert srv.maildir.wait_count(1)
        srv.wait_log("error, deferred")
    finally:
        r.remove()


def test_rspamd_stopped_accept_policy_marks_the_message(make_server, knot):
    port = free_ports(1)[0]  # nothing listens there
    srv = make_server(plugins=plugins(port, "on_error accept"))
    assert send_message(srv, [RCPT], make_message("unscanned", ["hello"])).code == 250
    delivered = srv.maildir.wait_count(1)[0].decode(errors="replace")
    assert "\nX-Rspamd-Unscanned: not scanned, rspamd error" in delivered.split("\n\n", 1)[0]
    srv.wait_log("cannot connect")
