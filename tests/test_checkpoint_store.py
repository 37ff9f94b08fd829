"""Atomic checkpoints with fallback, safe loading, checksums, and the locked runs.csv."""
import multiprocessing as mp
import pickle
import re

import pytest
import torch

from kd_methods.engine.checkpoint import load_checkpoint, load_verified, save_atomic, sha256_of
from kd_methods.errors import CheckpointError, ResultsDamaged
from kd_methods.runs.store import append_results_row, read_curves, read_results


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


def test_curves_are_kept_once_per_run_beside_the_rows(tmp_path):
    """results/<paper>/curves.csv: each run's per-epoch rows once, however many tables show it; a run
    recorded again replaces its rows; columns are the union, numbers read back as floats."""
    teacher = [{"epoch": "1", "stage": "train", "stage_epoch": "1", "top1_err": "60.0", "wall_s": "3.1"}]
    student = [{"epoch": "1", "stage": "paraphraser", "stage_epoch": "1", "loss_rec": "0.5", "top1_err": "99.0"},
               {"epoch": "2", "stage": "train", "stage_epoch": "1", "top1_err": "55.0"}]
    row = {"run_id": "s", "table": "t1", "top1_err": 55, "teachers": "t"}
    append_results_row(tmp_path, "feed", row, curves={"s": student, "t": teacher})
    append_results_row(tmp_path, "feed", dict(row, table="t2"), curves={"s": student, "t": teacher})
    append_results_row(tmp_path, "feed", {"run_id": "t", "table": "t1"}, curves={"t": teacher})
    curves = read_curves(tmp_path / "feed" / "curves.csv")
    assert curves == {"s": [{"epoch": 1.0, "stage": "paraphraser", "stage_epoch": 1.0, "loss_rec": 0.5, "top1_err": 99.0},
                            {"epoch": 2.0, "stage": "train", "stage_epoch": 1.0, "top1_err": 55.0}],
                      "t": [{"epoch": 1.0, "stage": "train", "stage_epoch": 1.0, "top1_err": 60.0}]}  # no wall_s
    header = (tmp_path / "feed" / "curves.csv").read_text().splitlines()[0]
    assert header == "run_id,epoch,stage,stage_epoch,loss_rec,top1_err"
    assert [r["teachers"] for r in read_results(tmp_path / "feed" / "runs.csv")] == ["t", "t", ""]


@pytest.mark.parametrize("damage, what", [
    (lambda raw: raw + b"x,y\n", "line 3 is damaged (2 fields where the header has 21)"),
    (lambda raw: raw.replace(b",,10,", b",,ten,"), "line 2 is damaged (top1_err is 'ten', not a number)"),
    (lambda raw: raw.replace(b"run_id,", b"id,", 1), "line 1 is damaged (no header naming its columns)"),
    (lambda raw: raw + b"b,\xff\n", "line 3 is damaged (byte 0xff is not UTF-8 text)"),
    (lambda raw: raw.replace(b",{},", b",[],"), "line 2 is damaged (its extra column is not a JSON object)"),
])
def test_a_damaged_runs_csv_names_its_line_and_is_never_rewritten(tmp_path, damage, what):
    append_results_row(tmp_path, "feed", {"run_id": "a", "table": "t", "top1_err": 10, "extra": "{}"})
    path = tmp_path / "feed" / "runs.csv"
    path.write_bytes(damage(path.read_bytes()))
    before = path.read_bytes()
    with pytest.raises(ResultsDamaged, match=re.escape(f"{path} {what}")):
        read_results(path)
    with pytest.raises(ResultsDamaged):
        append_results_row(tmp_path, "feed", {"run_id": "b", "table": "t"})
    assert path.read_bytes() == before


def _append_many(args):
    root, worker = args
    for i in range(15):
        append_results_row(root, "dml", {"run_id": f"w{worker}-{i}", "table": "t"})


def test_concurrent_appends_lose_no_rows(tmp_path):
    with mp.get_context("fork").Pool(4) as pool:
        pool.map(_append_many, [(tmp_path, w) for w in range(4)])
    rows = read_results(tmp_path / "dml" / "runs.csv")
    assert len(rows) == 60 and len({r["run_id"] for r in rows}) == 60
