import os

import pytest
import torch

# Two cores: keep the tests on one intra-op thread each so results are reproducible and xdist-free.
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """A clean folder as the current directory (runs/ and results/ land here)."""
    monkeypatch.chdir(tmp_path)
    return tmp_path
