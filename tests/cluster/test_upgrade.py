"""Rolling upgrades under load: on one mail host a new ringsmtpd starts with `--join` on the
same port, then the old one gets SIGTERM and drains (docs/deploy.md, "Upgrading a cluster"),
with and without taking the host out at the balancer first (`state drain`). Either way every
250 is in a Maildir once, no connection is refused (HAProxy neither fails a connect to the
host nor retries one), and the clients see no 4xx: the old process's sessions carry on for
its drain grace and end with their QUIT."""

import signal

from load import LOAD_PLUGINS, check_no_loss, delivered_count, served, wait_delivered

LOAD = ("--messages", "3000", "--duration", "60", "--connections", "6")


def swap(cluster, name):
    """The upgrade on one host: the new process joins the port, the old one drains."""
    old = cluster.mail[name]
    new = cluster.join(name)
    old.signal(signal.SIGTERM)
    assert old.wait_exit() == 0, old.log()[-3000:]
    cluster.promote(name, new)
    return new


def test_join_then_sigterm_under_load(make_cluster, tmp_path):
    upgrade_under_load(make_cluster(LOAD_PLUGINS), tmp_path, "join + SIGTERM", drain_first=False)


def test_rolling_upgrade_with_balancer_drain(make_cluster, tmp_path):
    upgrade_under_load(make_cluster(LOAD_PLUGINS), tmp_path, "drain, join + SIGTERM, ready", drain_first=True)


def upgrade_under_load(cluster, tmp_path, label, drain_first):
    load = cluster.loadtest(tmp_path / "load", *LOAD)
    wait_delivered(cluster, load, 200)
    before = served(cluster)
    if drain_first:
        cluster.set_state("mail2", "drain")
        cluster.wait_no_sessions("mail2")
    new = swap(cluster, "mail2")
    if drain_first:
        cluster.set_state("mail2", "ready")
    at_swap = delivered_count(cluster)
    wait_delivered(cluster, load, at_swap + 200)
    report = load.wait()
    after = served(cluster)
    counts = check_no_loss(cluster, report, label)
    m = report["messages"]
    # Nothing the clients could see: no refusal, no 4xx, no lost connection.
    assert (counts["refused"], m["rejected_4xx"], m["failed"], report["connections"]["errors"]) == (0, 0, 0, 0), \
        (report["codes"], report["errors"])
    assert m["accepted"] == m["attempted"]
    # Nor anything HAProxy had to hide: no failed connect to mail2, no retry, no redispatch.
    for k in ("econ", "wretr", "wredis"):
        assert after["mail2"][k] == before["mail2"][k], (k, before["mail2"], after["mail2"])
    assert after["mail2"]["status"].startswith("UP"), after["mail2"]
    # The new process took over the host's share of the load.
    assert new.log().count("connect from 10.77.0.2:") > 0
    assert after["mail2"]["stot"] > before["mail2"]["stot"]
