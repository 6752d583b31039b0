"""pytest fixtures of the multi-host tests: `make_cluster` (see cluster.py for the network)."""

import signal

import pytest

from cluster import Cluster, e2e


@pytest.fixture(scope="session", autouse=True)
def _binary_exists():
    if not e2e.BINARY.exists():
        pytest.exit(f"{e2e.BINARY} is missing: tests/run builds it", 2)


@pytest.fixture
def make_cluster(tmp_path):
    """make_cluster(plugins, settings=None) -> a started Cluster. At the end of the test
    everything is stopped; a ringsmtpd still running must drain and exit 0 on SIGTERM, and
    one stopped during the test must have exited 0 or been killed on purpose (kill -9)."""
    made = []

    def make(plugins, settings=None):
        c = Cluster(tmp_path / f"cluster{len(made)}", plugins, settings)
        made.append(c)
        return c.start()

    yield make
    bad = []
    for c in made:
        for name, code in c.stop().items():
            if code not in (0, -signal.SIGKILL):
                bad.append(f"{name}: exit {code}")
    if bad:
        pytest.fail("ringsmtpd process(es) did not stop cleanly: " + ", ".join(bad))
