"""pytest fixtures for the Python module's tests (see tdtest.py for how they are run)."""
import pytest

import tdtest


@pytest.fixture
def daemon(tmp_path_factory):
    """A real tensord on a socket of its own; it must exit 0 on SIGTERM afterwards."""
    d = tdtest.Daemon(tmp_path_factory.mktemp("daemon"))
    yield d
    rc = d.stop()
    assert rc == 0, "tensord exited with %s:\n%s" % (rc, d.log_text())
