"""Atomic checkpoints with fallback, safe loading, checksums, and the locked runs.csv."""
import multiprocessing as mp
import pickle

import pytest
import torch

from kd_methods.engine.checkpoint import load_checkpoint, load_verified, save_atomic, sha256_of
from kd_methods.errors import CheckpointError
from kd_methods.runs.store import append_results_row, read_results


def test_save_keeps_previous_and_loads_newest(tmp_path):
    p = tmp_path / "last.pt"
    save_atomic({"step": torch.tensor(1)}, p)
    save_atomic({"step": torch.tensor(2)}, p)
    assert (tmp_path / "last.pt.prev").exists()
    assert int(load_checkpoint(p)["step"]) == 2
    assert not [f for f in tmp_path.iterdir() if ".tmp" in f.name]


def test_truncated_checkpoint_falls_back_to_previous(tmp_path):
    p = tmp_path / "last.pt"
    save_atomic({"step": torch.tensor(1)}, p)
    save_atomic({"step": torch.tensor(2)}, p)
    p.write_bytes(p.read_bytes()[:40])
    with pytest.warns(UserWarning, match="falling back"):
        assert int(load_checkpoint(p)["step"]) == 1


def test_corrupt_checkpoint_without_fallback_is_a_clear_error(tmp_path):
    p = tmp_path / "last.pt"
    p.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="unreadable"):
        load_checkpoint(p)
    assert load_checkpoint(tmp_path / "missing.pt") is None


class Evil:
    def __reduce__(self):
        return (print, ("code ran",))


def test_loading_never_unpickles_code(tmp_path):
    p = tmp_path / "evil.pt"
    torch.save({"x": Evil()}, p, pickle_module=pickle)
    with pytest.raises(CheckpointError):
        load_checkpoint(p)


def test_pretrained_weights_are_verified_by_sha256(tmp_path):
    p = tmp_path / "w.pt"
    torch.save({"fc.weight": torch.ones(2, 2)}, p)
    digest = sha256_of(p)
    assert torch.equal(load_verified(p, digest)["fc.weight"], torch.ones(2, 2))
    with pytest.raises(CheckpointError, match="expected"):
        load_verified(p, "0" * 64)
    with pytest.raises(CheckpointError, match="not found"):
        load_verified(tmp_path / "nope.pt", digest)


def test_results_rows_are_keyed_by_run_table_and_label(tmp_path):
    append_results_row(tmp_path, "feed", {"run_id": "a", "table": "Table 1", "top1_err": 10})
    append_results_row(tmp_path, "feed", {"run_id": "a", "table": "Table 2", "top1_err": 10})
    append_results_row(tmp_path, "feed", {"run_id": "a", "table": "Table 1", "top1_err": 9})
    append_results_row(tmp_path, "feed", {"run_id": "a", "table": "Table 1", "label": "teacher", "top1_err": 9})
    rows = read_results(tmp_path / "feed" / "runs.csv")
    assert [(r["run_id"], r["table"], r["label"], r["top1_err"]) for r in rows] == [
        ("a", "Table 2", "", "10"), ("a", "Table 1", "", "9"), ("a", "Table 1", "teacher", "9")]


def _append_many(args):
    root, worker = args
    for i in range(15):
        append_results_row(root, "dml", {"run_id": f"w{worker}-{i}", "table": "t"})


def test_concurrent_appends_lose_no_rows(tmp_path):
    with mp.get_context("fork").Pool(4) as pool:
        pool.map(_append_many, [(tmp_path, w) for w in range(4)])
    rows = read_results(tmp_path / "dml" / "runs.csv")
    assert len(rows) == 60 and len({r["run_id"] for r in rows}) == 60
