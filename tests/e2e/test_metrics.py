"""Live metrics: the Prometheus endpoint (config file `metrics`) shows exactly the counts of a
known load, summed over both workers."""

import smtplib
import urllib.request

from conftest import IO_TIMEOUT, free_port, make_message


def scrape(port):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=IO_TIMEOUT) as r:
        assert r.status == 200
        return r.read().decode()


def value(text, name):
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    raise AssertionError(f"{name} not in:\n{text}")


def test_a_scrape_after_a_known_load_shows_exact_counts(make_server):
    mport = free_port()
    srv = make_server(threads=2, settings={"metrics": f"127.0.0.1:{mport}"})
    before = scrape(mport)
    assert value(before, "ringsmtpd_connections_total") == 0
    for i in range(5):
        with smtplib.SMTP("127.0.0.1", srv.port, timeout=IO_TIMEOUT) as s:
            s.sendmail("a@example.org", ["user@example.test"], make_message(f"m{i}", ["hi"]))
            if i == 0:
                try:
                    s.sendmail("a@example.org", ["x@elsewhere.org"], make_message("no", ["x"]))
                except smtplib.SMTPRecipientsRefused:
                    pass
    srv.maildir.wait_count(5)
    text = scrape(mport)
    assert value(text, "ringsmtpd_connections_total") == 5
    assert value(text, 'ringsmtpd_messages_total{class="2xx"}') == 5
    assert value(text, 'ringsmtpd_plugin_outcomes_total{plugin="rcpt_ok",hook="rcpt",outcome="OK"}') == 5
    assert value(text, 'ringsmtpd_plugin_outcomes_total{plugin="rcpt_ok",hook="rcpt",outcome="DENY"}') == 1
    assert value(text, 'ringsmtpd_plugin_outcomes_total{plugin="queue/maildir",hook="queue",outcome="OK"}') == 5
    assert value(text, 'ringsmtpd_queue_duration_seconds_count{}') == 5
    # Other paths are 404; the endpoint never answers mail commands.
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{mport}/other", timeout=IO_TIMEOUT)
        raise AssertionError("expected 404")
    except urllib.error.HTTPError as e:
        assert e.code == 404


def test_dns_counters_after_a_known_load(make_server):
    """Three connections from one (unlisted) client, one worker, one dnsbl zone: three lookups,
    one query on the wire (knot counts it), two answered from the cache."""
    import pathlib
    import sys
    import time

    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "dns"))
    from server import start_knot

    with start_knot() as knot:
        mport = free_port()
        srv = make_server(
            threads=1,
            plugins=["dnsbl", "rcpt_ok", "queue/maildir {maildir}"],
            settings={
                "metrics": f"127.0.0.1:{mport}",
                "dns_servers": f"127.0.0.1:{knot.port}",
                "dnsbl_zones": "dnsbl.test:Listed at dnsbl.test",
            },
        )
        before = knot.query_count()
        for i in range(3):
            with smtplib.SMTP("127.0.0.1", srv.port, timeout=IO_TIMEOUT) as s:
                s.sendmail("a@example.org", ["user@example.test"], make_message(f"d{i}", ["hi"]))
        srv.maildir.wait_count(3)
        assert knot.query_count() - before == 1
        deadline = time.monotonic() + IO_TIMEOUT  # workers publish DNS counters once a second
        while True:
            text = scrape(mport)
            if value(text, "ringsmtpd_dns_lookups_total") == 3 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert value(text, "ringsmtpd_dns_lookups_total") == 3, text
        assert value(text, "ringsmtpd_dns_queries_sent_total") == 1
        assert value(text, "ringsmtpd_dns_cache_hits_total") == 2
        assert value(text, "ringsmtpd_dns_timeouts_total") == 0
