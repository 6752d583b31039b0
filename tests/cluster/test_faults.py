"""Faults under load through the balancer: a mail host killed with SIGKILL, Redis killed, the
balancer restarted. smtp-loadtest (on the client host) records which messages got 250; the
tests count them in the three Maildirs (load.check_no_loss)."""

import pytest

from load import LOAD_PLUGINS, check_no_loss, delivered_count, served, wait_delivered

# Bounded loads: a message count, and a duration cap should the machine be slow.
LOAD = ("--messages", "3000", "--duration", "60", "--connections", "6")
AFTER = ("--messages", "300", "--connections", "4")


def test_kill9_one_host_mid_load(make_cluster, tmp_path):
    cluster = make_cluster(LOAD_PLUGINS)
    load = cluster.loadtest(tmp_path / "load", *LOAD)
    wait_delivered(cluster, load, 200)
    cluster.mail["mail2"].kill9()
    cluster.wait_status({"mail2": "DOWN", "mail1": "UP", "mail3": "UP"})
    report = load.wait()
    counts = check_no_loss(cluster, report, "kill -9 mail2")
    assert counts["250 given"] > 200

    # HAProxy's checks took the dead host out: a new load is served whole by the other two,
    # and not one session more goes to mail2.
    before = served(cluster)
    after_report = cluster.loadtest(tmp_path / "after", *AFTER).wait()
    after = served(cluster)
    m = after_report["messages"]
    assert (m["accepted"], m["failed"], after_report["connections"]["errors"]) == (300, 0, 0), after_report
    assert after["mail2"]["stot"] == before["mail2"]["stot"], (before, after)
    for name in ("mail1", "mail3"):
        assert after[name]["stot"] > before[name]["stot"], (before, after)
    check_no_loss(cluster, after_report, "after the kill")


@pytest.mark.parametrize("policy", ["pass", "defer"])
def test_redis_killed_mid_load(make_cluster, tmp_path, policy):
    plugins = [LOAD_PLUGINS[0] + f" on_store_error {policy}"] + LOAD_PLUGINS[1:]
    cluster = make_cluster(plugins)
    load = cluster.loadtest(tmp_path / "load", *LOAD)
    wait_delivered(cluster, load, 200)
    cluster.redis.kill9()
    at_kill = delivered_count(cluster)
    report = load.wait()  # no hang: the run ends
    counts = check_no_loss(cluster, report, f"redis killed, on_store_error {policy}")
    m = report["messages"]
    assert m["failed"] == 0 and report["connections"]["errors"] == 0, report
    warned = [n for n, h in cluster.mail.items() if "state store" in h.log() and
              ("letting mail through" if policy == "pass" else "deferring") in h.log()]
    assert warned, "no host logged the store failure and its policy"
    if policy == "pass":
        # Mail goes on without the store.
        assert m["rejected_4xx"] == 0, report["codes"]
        assert m["accepted"] == m["attempted"]
        assert delivered_count(cluster) > at_kill
    else:
        # Every message after the kill is deferred with 451 4.3.0, none lost, none hung.
        assert m["rejected_4xx"] > 0 and report["codes"].get("451", 0) >= m["rejected_4xx"], report["codes"]
        assert m["accepted"] + m["rejected_4xx"] == m["attempted"]
        assert counts["found"] == m["accepted"]


def test_balancer_restarted_mid_load(make_cluster, tmp_path):
    cluster = make_cluster(LOAD_PLUGINS)
    # --max-failures: the clients keep trying while the balancer is away.
    load = cluster.loadtest(tmp_path / "load", *LOAD, "--max-failures", "100000")
    wait_delivered(cluster, load, 200)
    cluster.restart_balancer()
    at_restart = delivered_count(cluster)
    report = load.wait()
    check_no_loss(cluster, report, "balancer restarted")
    # Service resumed: mail kept arriving after the new balancer came up.
    assert delivered_count(cluster) > at_restart
    assert report["messages"]["accepted"] > 0
