"""What the fault and upgrade tests check after a load through the balancer: the counts that say
no mail was lost or duplicated. Counts only, never timings."""

import json
import os

from cluster import MAIL, e2e

# bench/cluster sets this to collect the fault runs' counts (one JSON line per check) for its
# report; the tests themselves only assert on them.
COUNTS_FILE = os.environ.get("RINGSMTPD_CLUSTER_COUNTS")

# greylisting in log-only mode keeps the state store (Redis) on every message's path without
# deferring the load's one triplet; rcpt_ok and queue/maildir accept and store it.
LOAD_PLUGINS = [
    "greylisting reject 0 black_timeout 2 grey_timeout 600",
    "rcpt_ok",
    "queue/maildir {maildir}",
]


def delivered_count(cluster):
    """Files in every host's Maildir (cheap: names only), to watch a load progress."""
    return sum(len(h.maildir.files()) for h in cluster.mail.values())


def wait_delivered(cluster, load, n, deadline=90):
    """Waits until at least `n` messages were delivered in all while `load` still runs."""
    e2e.wait_for(lambda: delivered_count(cluster) >= n or not load.running(), deadline,
                 f"{n} messages delivered through the balancer", interval=0.05)
    assert load.running(), "the load ended before the fault: give it more --messages"


def check_no_loss(cluster, report, label):
    """Every message answered 250 is in exactly one host's Maildir, once; no message is in
    two; a message delivered without its 250 reaching the client is one of those the client
    saw fail (dropped connection) or deferred. Returns the counts (printed for the docs)."""
    m = report["messages"]
    acked = report["accepted_seqs"]
    delivered = cluster.delivered(report["run_id"])
    counts = {
        "attempted": m["attempted"],
        "250 given": m["accepted"],
        "4xx": m["rejected_4xx"],
        "5xx": m["rejected_5xx"],
        "failed": m["failed"],
        "found": sum(delivered.values()),
        "250 found": sum(1 for s in acked if s in delivered),
        "duplicates": sum(n - 1 for n in delivered.values() if n > 1),
        "refused": sum(e["count"] for e in report["errors"] if e["kind"] == "refused"),
    }
    print(f"\n{label}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    if COUNTS_FILE:
        with open(COUNTS_FILE, "a") as f:
            f.write(json.dumps({"label": label, **counts}) + "\n")
    assert m["balanced"], m
    assert len(acked) == len(set(acked)) == m["accepted"], "the accepted list and the report disagree"
    assert counts["250 found"] == counts["250 given"], \
        f"{label}: messages answered 250 but in no Maildir: {[s for s in acked if s not in delivered][:20]}"
    assert counts["duplicates"] == 0, {s: n for s, n in delivered.items() if n > 1}
    assert m["rejected_5xx"] == 0, report["codes"]
    unacked = set(delivered) - set(acked)
    assert len(unacked) <= m["failed"] + m["rejected_4xx"], (len(unacked), m)
    return counts


def served(cluster):
    """HAProxy's per-server counters: name -> {"stot": sessions, "econ": connection errors,
    "wretr": retries, "wredis": redispatches, "status"}."""
    out = {}
    for name, row in cluster.haproxy.stats().items():
        out[name] = {k: int(row[k] or 0) for k in ("stot", "econ", "wretr", "wredis")}
        out[name]["status"] = row["status"]
    assert set(out) == set(MAIL), out
    return out
