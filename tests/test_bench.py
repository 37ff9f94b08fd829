"""`kd-bench bench --quick` on CPU: it runs, and writes the CSV and README it promises (no timing claims)."""
from __future__ import annotations

import csv
import math

import pytest
import torch

from kd_methods import bench

REQUIRED = ["name", "device", "batch", "ms_per_step", "img_per_s", "ratio_vs_reference"]


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    assert bench.main(device="cpu", out=out, quick=True) == 0
    with open(out / "bench.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    return out, rows


@pytest.mark.slow
def test_quick_bench_writes_positive_timings_with_the_right_columns(quick_run):
    out, rows = quick_run
    with open(out / "bench.csv", newline="") as f:
        header = next(csv.reader(f))
    assert header[:len(REQUIRED)] == REQUIRED and header == bench.COLUMNS
    names = [r["name"] for r in rows]
    assert len(names) == len(set(names))
    for must in ("data pipeline", "data pipeline [textbook]", "plain resnet8", "kd resnet14->resnet8",
                 "pfeed 5x resnet14->resnet14", "dml 2x resnet8", "dml 4x resnet8", "teachers 5x resnet14 (vmap)",
                 "fitnets hint resnet14->resnet8", "at resnet14->resnet8", "fsp stage1 resnet14->resnet8",
                 "ft resnet14->resnet8"):
        assert must in names
    for r in rows:
        assert r["device"].startswith("cpu") and int(r["batch"]) == 8
        ms, ips = float(r["ms_per_step"]), float(r["img_per_s"])
        # img_per_s is printed to 0.1: under load a step takes seconds and rounding alone is over 1%
        assert ms > 0 and ips > 0 and math.isclose(ips, 8 / (ms / 1000), rel_tol=0.01, abs_tol=0.05)
        assert float(r["ms_min"]) <= float(r["ms_q1"]) <= ms <= float(r["ms_q3"]) <= float(r["ms_max"])
        assert r["mfu"] == "n/a"  # no MFU without a GPU
        if r["reference"]:
            assert r["reference"] in names and float(r["ratio_vs_reference"]) > 0
    by_name = {r["name"]: r for r in rows}
    kd, ref = by_name["kd resnet14->resnet8"], by_name["kd resnet14->resnet8 [textbook]"]
    expected = float(ref["ms_per_step"]) / float(kd["ms_per_step"])
    assert math.isclose(float(kd["ratio_vs_reference"]), expected, rel_tol=0.01)
    assert not any(n.startswith("gpu ") for n in names)


@pytest.mark.slow
def test_quick_bench_readme_names_hardware_protocol_targets_and_skips(quick_run):
    out, _ = quick_run
    text = (out / "README.md").read_text()
    assert f"torch {torch.__version__}" in text and "logical cores" in text
    assert "round-robin" in text and "## Targets" in text
    assert "KD (resnet14 -> resnet8) step >= 1.25x faster" in text
    assert "GPU throughput cases" in text and "skipped, no CUDA device" in text


def test_targets_are_computed_from_the_rows():
    settings = bench.Settings.for_device(torch.device("cpu"), quick=False)
    names = {"kd": "kd", "pfeed": "pfeed", "plain_large": "p56", "plain_mid": "p32", "plain_small": "p20",
             "dml2": "dml2", "data": "data"}

    def row(name, ms, ratio=""):
        return dict(name=name, ms_per_step=ms, ratio_vs_reference=ratio, img_per_s=64 / ms * 1000, mfu="n/a")
    table = [row("kd", 100.0, "1.500"), row("pfeed", 300.0), row("p56", 200.0), row("p32", 50.0),
             row("p20", 40.0), row("dml2", 104.0), row("data", 10.0)]
    got = {label: (value, ok) for label, value, ok in bench.targets(table, settings, names)}
    assert got["KD (resnet56 -> resnet20) step >= 1.25x faster than the textbook loop"] == ("1.50x", True)
    assert got["pFEED step (5 resnet56 teachers) <= 2.0 x a plain resnet56 step (ratio of times)"] == ("1.50x", True)
    assert got["DML with 2 resnet32 <= 1.05 x 2 plain resnet32 steps (ratio of times)"] == ("1.04x", True)
    assert got["DML with 4 resnet32 <= 1.05 x 4 plain resnet32 steps (ratio of times)"] == ("not measured", None)
    assert got["data pipeline >= 3x faster than a training step (plain resnet20 step / data batch)"] == ("4.00x", True)
    assert got["resnet56 training at batch 512 (32px) >= 40,000 img/s"] == ("skipped (no CUDA device)", None)


def test_clock_and_case_statistics():
    calls = []
    seconds = bench.Clock(torch.device("cpu"))(lambda: calls.append(1), 5)
    assert len(calls) == 5 and seconds >= 0
    case = bench.Case("c", 8, lambda: None, samples=[0.004, 0.001, 0.002, 0.003])
    st = case.stats()
    assert st["median"] == pytest.approx(2.5) and st["min"] == pytest.approx(1) and st["max"] == pytest.approx(4)
    assert st["q1"] == pytest.approx(1.75) and st["q3"] == pytest.approx(3.25)


def test_peak_table_matches_device_names():
    assert bench.peak_flops(torch.device("cpu")) is None
    match = dict(bench.PEAK_BF16)
    names = {"NVIDIA H100 80GB HBM3": 989e12, "NVIDIA H100 PCIe": 756e12, "NVIDIA A100-SXM4-80GB": 312e12,
             "NVIDIA L40S": 362e12, "NVIDIA L4": 121e12}
    for name, peak in names.items():
        assert next(p for key, p in bench.PEAK_BF16 if key in name) == peak, name
    assert match["H200"] == 989e12


def test_packed_runs_are_reported_per_k_with_runs_per_hour():
    """k runs on one GPU (measured by make bench on CUDA): the rows and README section from what
    `packing.measure` returns, here made up."""
    from kd_methods.packing import STEPS_PER_RUN
    packed = [dict(k=1, model="cifar_resnet56", batch=128, steps_per_s=20.0, img_per_s=2560.0,
                   runs_per_hour=20.0 * 3600 / STEPS_PER_RUN, vs_one=1.0),
              dict(k=4, model="cifar_resnet56", batch=128, steps_per_s=50.0, img_per_s=6400.0,
                   runs_per_hour=50.0 * 3600 / STEPS_PER_RUN, vs_one=2.5)]
    rows = bench.packing_rows(packed, "NVIDIA H100")
    assert [r["name"] for r in rows] == ["pack 1x resnet56", "pack 4x resnet56"]
    assert all(set(r) == set(bench.COLUMNS) for r in rows)
    assert rows[1]["ms_per_step"] == 80.0  # one process: 4 processes share 50 steps/s
    assert rows[1]["ratio_vs_reference"] == "2.500" and "2.31 runs/hour" in rows[1]["note"]
    section = bench.packing_section(packed)
    assert "| 4 | 6,400 | 2.31 | 2.50x |" in section


def test_a_packed_worker_counts_the_steps_of_its_window():
    """The process body of `packing.measure`, run here in-process (a real measurement needs a GPU)."""
    import queue
    import threading

    from kd_methods.packing import _worker
    results = queue.Queue()
    _worker("cpu", "cifar_resnet8", 8, 64, 1, 0.5, torch.get_num_threads(), threading.Barrier(1), results)
    steps, elapsed = results.get_nowait()
    assert steps >= 1 and elapsed >= 0.5
