import contextlib
import os

import pytest
import torch

# At most two intra-op threads; one under pytest-xdist (`make test` runs a worker per core), so the
# workers do not fight over the cores.
torch.set_num_threads(1 if os.environ.get("PYTEST_XDIST_WORKER") else max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """A clean folder as the current directory (runs/ and results/ land here)."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def stopped_after_epochs(monkeypatch):
    """`with stopped_after_epochs(n):` training raises KeyboardInterrupt (a Ctrl-C, or a kill between
    epochs) right after epoch n's checkpoint and metrics.csv are written; the writer is restored after."""
    from kd_methods.engine import metrics

    original = metrics.MetricsLog.write

    @contextlib.contextmanager
    def stopping(epochs: int):
        def write_then_stop(self):
            original(self)
            if len(self.history) == epochs:
                raise KeyboardInterrupt

        monkeypatch.setattr(metrics.MetricsLog, "write", write_then_stop)
        try:
            yield
        finally:
            monkeypatch.setattr(metrics.MetricsLog, "write", original)

    return stopping
