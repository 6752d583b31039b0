"""The Debian package (packaging/build-deb): built from the release binaries, installed with
dpkg, its service started as the unit says (without systemd's init: the unit's ExecStart with
its User=, Group= and WorkingDirectory=), mail sent with swaks lands in the Maildir, then the
package is removed and purged and leaves only what Debian policy keeps (the system user, and
the received mail).

Root only (dpkg, adduser); it changes this machine's /usr, /etc and /var, and undoes it."""

import configparser
import os
import pathlib
import pwd
import shlex
import shutil
import signal
import subprocess
import uuid

import pytest

from conftest import BINARY, free_port, wait_for

ROOT = pathlib.Path(__file__).resolve().parents[2]
UNIT = pathlib.Path("/lib/systemd/system/ringsmtpd.service")
TEMPLATE = pathlib.Path("/lib/systemd/system/ringsmtpd@.service")
STATE = pathlib.Path("/var/lib/ringsmtpd")

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="installs a package with dpkg: needs root")


def sh(*args, check=True, timeout=300):
    r = subprocess.run(list(args), capture_output=True, text=True, timeout=timeout,
                       stdin=subprocess.DEVNULL)
    if check:
        assert r.returncode == 0, (args, r.stdout, r.stderr)
    return r


def installed():
    r = sh("dpkg-query", "-W", "-f=${Status}", "ringsmtpd", check=False)
    return r.returncode == 0 and "installed" in r.stdout


def unit(path):
    """The [Service] section of a unit file (systemd's `KEY=value`, last one wins)."""
    p = configparser.ConfigParser(strict=False, interpolation=None)
    p.optionxform = str
    p.read_string(path.read_text())
    return p["Service"]


@pytest.fixture
def package(tmp_path):
    if installed():
        pytest.fail("ringsmtpd is already installed here: this test installs and purges it")
    user_existed = any(u.pw_name == "ringsmtpd" for u in pwd.getpwall())
    release = BINARY.parent
    out = sh(str(ROOT / "packaging" / "build-deb"), "--bin", str(release), "--out", str(tmp_path))
    deb = pathlib.Path(out.stdout.strip().splitlines()[-1])
    assert deb.exists(), out.stdout
    yield deb
    # Whatever happened, leave the machine as it was.
    if installed():
        sh("dpkg", "--purge", "ringsmtpd", check=False)
    shutil.rmtree(STATE, ignore_errors=True)
    if not user_existed:
        sh("userdel", "ringsmtpd", check=False)
        sh("groupdel", "ringsmtpd", check=False)


def test_package_installs_serves_and_purges(package, tmp_path):
    deb = package
    # What it holds: binaries, conffiles for the whole config directory, both units, man pages.
    listing = sh("dpkg-deb", "-c", str(deb)).stdout
    for path in ["./usr/sbin/ringsmtpd", "./usr/bin/smtp-loadtest", "./lib/systemd/system/ringsmtpd.service",
                 "./lib/systemd/system/ringsmtpd@.service", "./usr/share/man/man8/ringsmtpd.8.gz",
                 "./usr/share/man/man1/smtp-loadtest.1.gz"]:
        assert f" {path}\n" in listing, (path, listing)
    assert sh("dpkg-deb", "-f", str(deb), "Package").stdout.strip() == "ringsmtpd"
    ctl = tmp_path / "control"
    sh("dpkg-deb", "-e", str(deb), str(ctl))
    shipped = sorted(f"/etc/ringsmtpd/{p.name}" for p in (ROOT / "config").iterdir())
    assert sorted((ctl / "conffiles").read_text().split()) == shipped

    sh("dpkg", "-i", str(deb))
    owned = [p for p in sh("dpkg", "-L", "ringsmtpd").stdout.splitlines() if p.strip()]
    assert pathlib.Path("/usr/sbin/ringsmtpd").exists()
    user = pwd.getpwnam("ringsmtpd")
    assert user.pw_uid < 1000 and user.pw_dir == str(STATE), user
    assert STATE.is_dir() and STATE.stat().st_uid == user.pw_uid
    assert "man:ringsmtpd(8)" in UNIT.read_text()
    if shutil.which("systemd-analyze"):
        # systemd's own reading of the unit: no unknown key or bad value.
        r = sh("systemd-analyze", "verify", str(UNIT), check=False)
        complaints = [l for l in (r.stdout + r.stderr).splitlines() if l and "man " not in l]
        assert complaints == [], complaints

    svc = unit(UNIT)
    for key, want in [("NoNewPrivileges", "yes"), ("ProtectSystem", "strict"), ("PrivateTmp", "yes"),
                      ("ProtectHome", "yes"), ("CapabilityBoundingSet", "CAP_NET_BIND_SERVICE"),
                      ("AmbientCapabilities", "CAP_NET_BIND_SERVICE"), ("User", "ringsmtpd")]:
        assert svc.get(key) == want, (key, svc.get(key))
    assert str(STATE) in svc["ReadWritePaths"].split()
    join = shlex.split(unit(TEMPLATE)["ExecStart"])
    assert join == shlex.split(svc["ExecStart"]) + ["--join"], join

    # The installed config checks clean, on a port of our own (an administrator's edit of a
    # conffile; purge removes it with the rest).
    port = free_port()
    pathlib.Path("/etc/ringsmtpd/listen").write_text(f"127.0.0.1:{port}\n")
    argv = shlex.split(svc["ExecStart"])
    assert argv[0] == "/usr/sbin/ringsmtpd"
    check = subprocess.run(argv + ["--check"], cwd=svc["WorkingDirectory"], user=svc["User"],
                           group=svc["Group"], extra_groups=[], capture_output=True, text=True,
                           timeout=60)
    assert check.returncode == 0, check.stderr
    assert [l for l in check.stderr.splitlines() if l.startswith(("error", "warning"))] == [], check.stderr

    # The service as systemd would start it.
    log = open(tmp_path / "server.log", "w")
    proc = subprocess.Popen(argv, cwd=svc["WorkingDirectory"], user=svc["User"], group=svc["Group"],
                            extra_groups=[], stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                            env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"})
    try:
        wait_for(lambda: "listening on" in (tmp_path / "server.log").read_text(), 30, "the server's start")
        token = uuid.uuid4().hex
        r = sh("swaks", "--server", f"127.0.0.1:{port}", "--to", "user@example.test",
               "--from", "sender@example.org", "--header", f"Subject: {token}", timeout=60)
        assert "<-  250 2.0.0 Queued" in r.stdout, r.stdout
        maildir = STATE / "Maildir" / "new"
        delivered = [p for p in maildir.iterdir() if token in p.read_text()]
        assert len(delivered) == 1, list(maildir.iterdir())
        assert delivered[0].stat().st_uid == user.pw_uid
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        log.close()
    assert proc.returncode == 0, (tmp_path / "server.log").read_text()

    # Remove: the program goes, the (changed) conffiles stay.
    sh("dpkg", "--remove", "ringsmtpd")
    assert not pathlib.Path("/usr/sbin/ringsmtpd").exists()
    assert not UNIT.exists() and not TEMPLATE.exists()
    assert pathlib.Path("/etc/ringsmtpd/listen").exists()
    # Purge: conffiles, the spool and the state store go; the user and the received mail stay
    # (Debian policy keeps system users; mail is never deleted by a purge).
    sh("dpkg", "--purge", "ringsmtpd")
    assert not installed()
    left = [p for p in owned if pathlib.Path(p).exists() and not pathlib.Path(p).is_dir()]
    assert left == [], left
    assert not pathlib.Path("/etc/ringsmtpd").exists()
    assert not (STATE / "spool").exists() and not (STATE / "state").exists()
    assert sorted(p.name for p in STATE.iterdir()) == ["Maildir"]
    assert pwd.getpwnam("ringsmtpd")
