"""A private Postfix instance for the end-to-end tests: its own config, queue, data and mail
directories under /tmp/<prefix>* (mode 0755, so the `postfix` user can reach them: pytest's own
tmp dirs are root-only), its own log file, never the machine's Postfix.

The tests use it in three roles, all built from the same main.cf core and master.cf services:

- a relaying client (test_postfix.py): `sendmail` in, `relayhost` out to ringsmtpd;
- a receiving MTA (test_forward.py): smtpd on a loopback port, `virtual` delivery to a Maildir;
- a queue behind its `public/cleanup` socket (test_queues.py), `virtual` delivery to a Maildir.

Postfix's master runs as root and its daemons as the `postfix` user (Debian package `postfix`,
installed with "No configuration" so no system instance runs); tests/run installs it.
"""

import os
import pwd
import shutil
import subprocess
import time

import pytest

from conftest import BINARY, Client, private_dir, wait_for

# main.cf settings every instance has: its own directories and log, no local delivery, short
# retry times, loopback only. A role adds its own (they may override these).
CORE_MAIN_CF = {
    "compatibility_level": "3.6",
    "config_directory": "{base}/etc",
    "queue_directory": "{base}/queue",
    "data_directory": "{base}/data",
    "meta_directory": "/etc/postfix",
    "shlib_directory": "/usr/lib/postfix",
    "daemon_directory": "/usr/lib/postfix/sbin",
    "command_directory": "/usr/sbin",
    "mail_owner": "postfix",
    "setgid_group": "postdrop",
    "mydestination": "",
    "local_recipient_maps": "",
    "alias_maps": "",
    "alias_database": "",
    "inet_interfaces": "loopback-only",
    "inet_protocols": "ipv4",
    "smtp_dns_support_level": "disabled",
    "maillog_file": "{base}/maillog",
    "maillog_file_prefixes": "{base}",
    "queue_run_delay": "1s",
    "minimal_backoff_time": "1s",
    "maximal_backoff_time": "2s",
    "biff": "no",
}

# master.cf lines by service name. CORE_SERVICES run in every instance (cleanup is public: the
# socket `sendmail`'s pickup and queue/postfix-queue talk to); a role adds what it needs.
SERVICES = {
    "pickup": "pickup    unix  n       -       n       60      1       pickup",
    "cleanup": "cleanup   unix  n       -       n       -       0       cleanup",
    "qmgr": "qmgr      unix  n       -       n       300     1       qmgr",
    "rewrite": "rewrite   unix  -       -       n       -       -       trivial-rewrite",
    "bounce": "bounce    unix  -       -       n       -       0       bounce",
    "defer": "defer     unix  -       -       n       -       0       bounce",
    "trace": "trace     unix  -       -       n       -       0       bounce",
    "verify": "verify    unix  -       -       n       -       1       verify",
    "flush": "flush     unix  n       -       n       1000?   0       flush",
    "proxymap": "proxymap  unix  -       -       n       -       -       proxymap",
    "smtp": "smtp      unix  -       -       n       -       -       smtp",
    "relay": "relay     unix  -       -       n       -       -       smtp",
    "showq": "showq     unix  n       -       n       -       -       showq",
    "error": "error     unix  -       -       n       -       -       error",
    "retry": "retry     unix  -       -       n       -       -       error",
    "discard": "discard   unix  -       -       n       -       -       discard",
    "virtual": "virtual   unix  -       n       n       -       -       virtual",
    "anvil": "anvil     unix  -       -       n       -       1       anvil",
    "scache": "scache    unix  -       -       n       -       1       scache",
    "tlsmgr": "tlsmgr    unix  -       -       n       1000?   1       tlsmgr",
    "postlog": "postlog   unix-dgram n  -       n       -       1       postlogd",
}
CORE_SERVICES = ("cleanup", "qmgr", "rewrite", "bounce", "defer", "trace", "verify", "showq", "error",
                 "retry", "discard", "anvil", "scache", "postlog")

PROGRAMS = ("postfix", "sendmail", "postqueue", "postcat")


def require_postfix():
    """Fails the test (never skips it) when Postfix is not installed or we are not root."""
    missing = [p for p in PROGRAMS if not shutil.which(p, path="/usr/sbin:/usr/bin")]
    if missing:
        pytest.fail(
            f"Postfix is not installed ({', '.join(missing)} missing): "
            "`apt-get install postfix` with debconf postfix/main_mailer_type='No configuration' "
            "(tests/run does it)"
        )
    if os.geteuid() != 0:
        pytest.fail("the private Postfix instance needs root: its master process starts as root")


class PrivatePostfix:
    """One private Postfix instance under /tmp/<prefix>*.

    hostname: its myhostname/mydomain/myorigin. main: main.cf settings added to CORE_MAIN_CF
    (a value may say {base}, {uid} or {gid}: the instance's directory, the postfix user's ids).
    services: master.cf services added to CORE_SERVICES. listen_port: run smtpd on
    127.0.0.1:listen_port. virtual_domain: deliver mail for that domain with the `virtual`
    agent into the Maildir `self.mailbox` (<base>/mail/box/). tls_cert: make a certificate
    for `hostname` in `self.ssl` (<base>/ssl/, with its CA `qpsmtpd-ca.crt`), for smtpd.
    parent: where the instance's directory is made instead of /tmp (bench/compare: on a spool
    filesystem of its own).
    """

    def __init__(self, prefix, hostname, main=None, services=(), listen_port=None, virtual_domain=None,
                 tls_cert=False, parent="/tmp"):
        self.base = private_dir(prefix, parent)
        self.port = listen_port
        self.etc = self.base / "etc"
        self.maillog = self.base / "maillog"
        self.socket = self.base / "queue" / "public" / "cleanup"
        self.mailbox = self.base / "mail" / "box"
        self.ssl = self.base / "ssl"
        pw = pwd.getpwnam("postfix")
        for d in ("etc", "queue", "data", "mail"):
            (self.base / d).mkdir()
        for d in ("data", "mail"):
            shutil.chown(self.base / d, user="postfix", group=pw.pw_gid)

        settings = dict(CORE_MAIN_CF, myhostname=hostname, mydomain=hostname, myorigin=hostname)
        services = list(CORE_SERVICES) + list(services)
        if virtual_domain:
            settings.update({
                "virtual_mailbox_domains": virtual_domain,
                "virtual_mailbox_base": "{base}/mail",
                "virtual_mailbox_maps": "static:box/",
                "virtual_uid_maps": "static:{uid}",
                "virtual_gid_maps": "static:{gid}",
                "virtual_minimum_uid": "{uid}",
            })
            services.append("virtual")
        settings.update(main or {})
        if tls_cert:
            subprocess.run(
                [str(BINARY), "tls-cert", "--dir", str(self.ssl), "--host", hostname],
                check=True, capture_output=True, timeout=30,
            )
        ids = {"base": self.base, "uid": pw.pw_uid, "gid": pw.pw_gid}
        (self.etc / "main.cf").write_text(
            "".join(f"{name} = {str(value).format(**ids)}\n" for name, value in settings.items())
        )
        master = [SERVICES[name] for name in dict.fromkeys(services)]  # each once, in order
        if listen_port:
            master.insert(0, f"127.0.0.1:{listen_port} inet n - n - - smtpd")
        (self.etc / "master.cf").write_text("".join(line + "\n" for line in master))

    # -- running its commands ---------------------------------------------------------------
    def run(self, args, input=None, check=True, timeout=60):
        """Runs a command; with check, fails the test (with the maillog) if it exits non-zero."""
        r = subprocess.run(
            [str(a) for a in args], input=input, capture_output=True, timeout=timeout,
            stdin=None if input is not None else subprocess.DEVNULL,
        )
        if check and r.returncode != 0:
            pytest.fail(f"{' '.join(map(str, args))} exited {r.returncode}: {r.stdout!r} {r.stderr!r}\n"
                        f"{self.log()}")
        return r

    def log(self):
        return self.maillog.read_text(errors="replace") if self.maillog.exists() else "(no maillog)"

    def start(self):
        """Starts the master; returns once cleanup's socket is there (and smtpd answers, if any)."""
        self.run(["postfix", "-c", self.etc, "start"])
        wait_for(self.socket.exists, 30, "Postfix's public/cleanup socket")
        if self.port:
            def listening():
                try:
                    Client(self.port, timeout=2).close()
                    return True
                except OSError:
                    return False

            wait_for(listening, 30, "the private Postfix's smtpd to listen")
        return self

    def stop(self):
        """`postfix stop`, or `postfix abort` if that fails."""
        if self.run(["postfix", "-c", self.etc, "stop"], check=False).returncode != 0:
            self.run(["postfix", "-c", self.etc, "abort"], check=False)

    def sendmail(self, sender, rcpts, message):
        """Submits `message` (bytes, LF line ends) through Postfix's own sendmail."""
        self.run(["sendmail", "-C", self.etc, "-f", sender, "-i", "--"] + list(rcpts), input=message)

    def flush(self):
        """Asks Postfix to retry its deferred mail now (postqueue -f)."""
        self.run(["postqueue", "-c", self.etc, "-f"], check=False)

    def queue_listing(self):
        """postqueue -p: "Mail queue is empty" or one entry per queued message."""
        return self.run(["postqueue", "-c", self.etc, "-p"], check=False).stdout.decode(errors="replace")

    def postcat(self, queue_id, *flags):
        """postcat of one queued message (e.g. flags "-e" for the envelope records)."""
        return self.run(["postcat", "-c", self.etc, *flags, "-q", queue_id]).stdout.decode("utf-8", "replace")

    # -- the Maildir of virtual_domain ------------------------------------------------------
    def files(self):
        """The files in the Maildir's new/, sorted."""
        new = self.mailbox / "new"
        return sorted(new.iterdir()) if new.is_dir() else []

    def wait_files(self, n, deadline=60):
        """Waits for n files in the Maildir (fails with the queue and the log after the
        deadline), lets a duplicate arrive for 0.3 s more, returns every file's bytes."""
        end = time.monotonic() + deadline
        while len(self.files()) < n:
            if time.monotonic() > end:
                pytest.fail(f"{len(self.files())} of {n} messages in the private Postfix's Maildir\n"
                            f"queue:\n{self.queue_listing()}\nlog:\n{self.log()[-4000:]}")
            time.sleep(0.1)
        time.sleep(0.3)  # anything extra (a duplicate) would arrive now
        return [p.read_bytes() for p in self.files()]
