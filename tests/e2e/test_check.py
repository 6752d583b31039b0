"""`ringsmtpd --check` as an administrator runs it: on Debian's qpsmtpd config directory
(/etc/qpsmtpd from the qpsmtpd package) it reports what it would do differently, each
expectation derived from what that directory contains; on the shipped directories it raises no
alarm; bad input gives an error naming the file, never a hang."""

import os
import pathlib
import re
import shutil
import subprocess

import pytest

from conftest import BINARY, ME, SHIPPED_CONFIG, free_port, server_env

QPSMTPD = pathlib.Path("/etc/qpsmtpd")
EXAMPLES = pathlib.Path(__file__).resolve().parents[2] / "examples"
FINDING = re.compile(r"^(error|warning|note): (\S+?): (.*)$", re.M)


@pytest.fixture(scope="module")
def qpsmtpd_config():
    """Debian's qpsmtpd package, installed when missing (as tests/run does)."""
    if not (QPSMTPD / "plugins").exists():
        if os.geteuid() != 0:
            pytest.skip("the qpsmtpd package is not installed and installing it needs root")
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run(["apt-get", "install", "-y", "-q", "qpsmtpd"], env=env, check=True,
                       stdin=subprocess.DEVNULL, capture_output=True, timeout=600)
        subprocess.run(["service", "qpsmtpd", "stop"], capture_output=True, timeout=60)
    return QPSMTPD


def check(cfg, cwd, env=None):
    r = subprocess.run([str(BINARY), "--config", str(cfg), "--check"], cwd=cwd,
                       env=env or server_env(cwd), capture_output=True, text=True, timeout=60)
    findings = FINDING.findall(r.stderr)
    return r, findings


def values(path, cfg):
    """The values of a config file as ringsmtpd reads them: (file, line, text), `$include`
    expanded (files only: Debian's directory includes files)."""
    out = []
    if not path.exists():
        return out
    for n, raw in enumerate(path.read_text().split("\n"), 1):
        text = raw.strip()
        if not text or text.startswith("#"):
            continue
        if text.startswith("$include"):
            target = pathlib.Path(text.split()[1])
            out += values(target if target.is_absolute() else cfg / target, cfg)
            continue
        out.append((str(path), n, text))
    return out


def plugin_names():
    """(implemented plugins, Debian compatibility names) from `ringsmtpd help`."""
    text = subprocess.run([str(BINARY), "help"], capture_output=True, text=True, timeout=30).stdout
    plugins, aliases = text.split("Debian's compatibility names")
    return set(re.findall(r"^  (\S+)", plugins, re.M)), set(re.findall(r"^  (\S+)", aliases, re.M))


def test_check_on_debians_qpsmtpd_directory(qpsmtpd_config, tmp_path):
    cfg = qpsmtpd_config
    r, findings = check(cfg, tmp_path)
    assert "panicked" not in r.stderr
    at = {(sev, where): msg for sev, where, msg in findings}
    implemented, aliases = plugin_names()

    # Every plugin line: runs as it is, runs under its new name (a note), or is not
    # implemented (an error naming the closest plugin).
    lines = values(cfg / "logging", cfg) + values(cfg / "plugins", cfg)
    assert lines, "Debian's plugins file has plugin lines"
    for file, n, text in lines:
        name = text.split()[0]
        base = re.sub(r":\d+$", "", name)
        where = f"{file}:{n}"
        if base in aliases:
            assert "compatibility name" in at.get(("note", where), ""), (where, r.stderr)
        elif base in implemented or base == "tls":
            assert not any(w == where and s == "error" for s, w in at), (where, r.stderr)
        else:
            assert f"unknown plugin '{name}'" in at.get(("error", where), ""), (where, r.stderr)

    # No queue line: every message would get 451.
    queues = [t for _, _, t in lines if t.split()[0].startswith("queue/")]
    no_queue = [m for (s, w), m in at.items() if s == "error" and "no queue plugin" in m]
    assert bool(no_queue) == (not queues), r.stderr

    # Core settings left to their defaults, which differ from qpsmtpd's.
    for files, word in [(["databytes"], "no databytes"), (["timeoutsmtpd", "timeout"], "no timeout"),
                        (["size_threshold"], "no size_threshold"), (["loglevel"], "no loglevel"),
                        (["listen"], "no listen file")]:
        unset = all(not values(cfg / f, cfg) for f in files)
        noted = any(s == "note" and m.startswith(word) for (s, _), m in at.items())
        assert noted == unset, (files, r.stderr)

    # Files of the directory nothing reads: named; qpsmtpd's plugin_dirs among them, while the
    # files the plugins file and the chain read are not.
    unread = {pathlib.Path(w).name for (s, w), m in at.items() if s == "note" and m.startswith("not read")}
    assert unread <= {p.name for p in cfg.iterdir()}, r.stderr
    assert ("plugin_dirs" in unread) == (cfg / "plugin_dirs").exists(), r.stderr
    read = {"plugins", "logging", "loglevel"} | {pathlib.Path(f).name for f, _, _ in lines}
    if any(t.split()[0] in ("relay", "check_relay") for _, _, t in lines):
        read.add("relayclients")
    if any(t.split()[0] == "rcpt_ok" for _, _, t in lines):
        read.add("rcpthosts")
    assert not unread & read, r.stderr

    # Every finding points into the directory or a file it includes, and errors fail the check.
    for _, where, _ in findings:
        assert where.startswith(str(cfg) + "/"), where
    errors = [f for f in findings if f[0] == "error"]
    assert (r.returncode == 1) == bool(errors), (r.returncode, r.stderr)
    assert f"{len(errors)} error(s)" in r.stderr


def test_shipped_config_raises_no_alarm(tmp_path):
    shutil.copytree(SHIPPED_CONFIG, tmp_path / "config")
    # 2525 may be held by a server someone runs; a busy port is another finding's test.
    (tmp_path / "config" / "listen").write_text(f"127.0.0.1:{free_port()}\n")
    r, findings = check("config", tmp_path)
    assert r.returncode == 0, r.stderr
    assert [f for f in findings if f[0] != "note"] == [], r.stderr


def test_submission_example_raises_no_alarm(tmp_path):
    cfg = tmp_path / "config"
    shutil.copytree(EXAMPLES / "submission", cfg)
    out = subprocess.run([str(BINARY), "tls-cert", "--dir", str(tmp_path / "ssl"), "--host", ME],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    shutil.copy(cfg / "flat_auth_pw.example", cfg / "flat_auth_pw")
    os.chmod(cfg / "flat_auth_pw", 0o600)
    (cfg / "me").write_text(ME + "\n")
    ports = [free_port(), free_port()]
    (cfg / "listen").write_text(f"127.0.0.1:{ports[0]}\n127.0.0.1:{ports[1]} tls\n")
    r, findings = check(cfg, tmp_path)
    assert r.returncode == 0, r.stderr
    assert [f for f in findings if f[0] != "note"] == [], r.stderr
    # The example password file is named as what it is.
    assert ("note", str(cfg / "flat_auth_pw.example")) in {(s, w) for s, w, _ in findings}


def test_an_open_relay_fails_the_check(tmp_path):
    shutil.copytree(SHIPPED_CONFIG, tmp_path / "config")
    (tmp_path / "config" / "listen").write_text(f"127.0.0.1:{free_port()}\n")
    (tmp_path / "config" / "relayclients").write_text("127.0.0.1\n0.0.0.0/0\n")
    r, findings = check("config", tmp_path)
    assert r.returncode == 1, r.stderr
    assert ("error", "config/relayclients:2") in {(s, w) for s, w, _ in findings}, r.stderr
    assert "is valid" not in r.stdout


def test_a_fifo_in_the_config_directory_is_an_error_not_a_hang(tmp_path):
    shutil.copytree(SHIPPED_CONFIG, tmp_path / "config")
    (tmp_path / "config" / "rcpthosts").unlink()
    os.mkfifo(tmp_path / "config" / "rcpthosts")
    r, findings = check("config", tmp_path)
    assert r.returncode == 1
    assert ("error", "config/rcpthosts") in {(s, w) for s, w, _ in findings}, r.stderr
    assert "panicked" not in r.stderr
