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
