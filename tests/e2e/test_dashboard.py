"""docs/grafana/ringsmtpd.json against a real scrape: every metric its queries use is exported
by a running server, with the labels the queries filter and group on, and every metric family
the server exports has a panel."""

import json
import pathlib
import re
import smtplib
from conftest import IO_TIMEOUT, free_port, make_message
from test_metrics import scrape

DASHBOARD = pathlib.Path(__file__).resolve().parents[2] / "docs" / "grafana" / "ringsmtpd.json"
# Labels Prometheus adds when it scrapes (target labels), not in the exposition.
TARGET_LABELS = {"instance", "job"}
METRIC = re.compile(r"\bringsmtpd_[a-z0-9_]+\b")


def series(text):
    """{metric name: set of label names} of the exposition's samples."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = re.match(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? ", line)
        assert m, line
        labels = set(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="', m.group(3) or ""))
        out.setdefault(m.group(1), set()).update(labels)
    return out


def queries(dash):
    """Every PromQL expression of the dashboard: panel targets and templating queries."""
    exprs = []
    for panel in dash["panels"]:
        for t in panel.get("targets", []):
            exprs.append(t["expr"])
    for var in dash["templating"]["list"]:
        q = var.get("query")
        if isinstance(q, dict):
            exprs.append(q["query"])
    return exprs


def test_every_metric_the_dashboard_uses_is_in_a_scrape(make_server):
    dash = json.loads(DASHBOARD.read_text())
    mport = free_port()
    # limit registers its plugin events (ringsmtpd_plugin_events_total) when it is loaded.
    srv = make_server(plugins=["limit rate_rcpt_host 1000/1m", "rcpt_ok", "queue/maildir {maildir}"],
                      settings={"metrics": f"127.0.0.1:{mport}"})
    # Traffic, so the per-plugin and queue series exist: one accepted message, one refused RCPT.
    with smtplib.SMTP("127.0.0.1", srv.port, timeout=IO_TIMEOUT) as s:
        s.sendmail("a@example.org", ["user@example.test"], make_message("dash", ["hi"]))
        try:
            s.sendmail("a@example.org", ["x@elsewhere.org"], make_message("no", ["x"]))
        except smtplib.SMTPRecipientsRefused:
            pass
    srv.maildir.wait_count(1)
    text = scrape(mport)
    exported = series(text)

    exprs = queries(dash)
    assert len(exprs) >= 10, exprs
    used = set()
    for expr in exprs:
        names = METRIC.findall(expr)
        assert names, f"a query that uses no ringsmtpd metric: {expr}"
        for name in names:
            assert name in exported, f"{name} (in {expr!r}) is not in the scrape:\n{text}"
            used.add(name)
        labels = set().union(*(exported[n] for n in names)) | {"le"} | TARGET_LABELS
        # Label matchers `{label=...}` and grouping `by (a, b)` name labels the metrics have.
        for matcher in re.findall(r"\{([^}]*)\}", expr):
            for label in re.findall(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)", matcher):
                assert label in labels, (label, expr)
        for group in re.findall(r"\bby \(([^)]*)\)", expr):
            for label in (g.strip() for g in group.split(",")):
                assert label in labels, (label, expr)

    # And the other way: every family the server exports has a panel (a histogram through its
    # _bucket, _sum or _count).
    families = set(re.findall(r"^# TYPE (\S+) ", text, re.M))
    for family in families:
        assert any(u == family or u.startswith(family + "_") for u in used), f"no panel shows {family}"
