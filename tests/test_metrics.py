"""Scoring: top-1/top-5 error and posterior entropy against answers computed by hand, whatever the batches
and however many processes share the test set."""
import json
import math
import os
import runpy
import socket
import subprocess
import sys
from contextlib import nullcontext

import pytest
import torch
from torch import nn

from kd_methods.engine.metrics import evaluate_model, topk_hits

ENV = dict(os.environ, OMP_NUM_THREADS="1", CI="true")


class Lookup(nn.Module):
    """A "network" whose logits for input i are row i of a fixed table."""

    def __init__(self, table):
        super().__init__()
        self.table = nn.Parameter(torch.tensor(table, dtype=torch.float32), requires_grad=False)

    def forward(self, index):
        return self.table[index]


# Five samples, six classes. Per sample: (logits, target, top-1 credit, top-5 credit), by hand.
#   0: target the unique maximum                                  -> 1, 1
#   1: target tied with one other class at the top                -> 1/2, 1
#   2: target the minimum, five classes above                     -> 0, 0
#   3: all six tied: ranks 1..6, one of them in the top 1, five in the top 5 -> 1/6, 5/6
#   4: three above, target tied with two others (ranks 4..6), two slots left in the top 5 -> 0, 2/3
SAMPLES = [([3, 1, 0, 0, 0, 0], 0, 1, 1),
           ([2, 2, 0, 0, 0, 0], 1, 1 / 2, 1),
           ([5, 4, 3, 2, 1, 0], 5, 0, 0),
           ([1, 1, 1, 1, 1, 1], 2, 1 / 6, 5 / 6),
           ([4, 3, 2, 1, 1, 1], 3, 0, 2 / 3)]


def entropy_by_hand(logits) -> float:
    z = sum(math.exp(v) for v in logits)
    return -sum(math.exp(v) / z * (v - math.log(z)) for v in logits)


def batches(samples, sizes):
    """The samples as (indices, targets) batches of the given sizes (a split of the test set)."""
    out, start = [], 0
    for size in sizes:
        idx = torch.arange(start, start + size)
        out.append((idx, torch.tensor([samples[i][1] for i in idx.tolist()])))
        start += size
    assert start == len(samples)
    return out


def expected(samples) -> dict:
    n = len(samples)
    return dict(top1_err=100 * (1 - sum(s[2] for s in samples) / n),
                top5_err=100 * (1 - sum(s[3] for s in samples) / n),
                entropy=sum(entropy_by_hand(s[0]) for s in samples) / n)


def test_ties_share_their_credit():
    logits = torch.tensor([s[0] for s in SAMPLES], dtype=torch.float32)
    targets = torch.tensor([s[1] for s in SAMPLES])
    assert topk_hits(logits, targets, 1).tolist() == pytest.approx([s[2] for s in SAMPLES])
    assert topk_hits(logits, targets, 5).tolist() == pytest.approx([s[3] for s in SAMPLES])
    nan = torch.tensor([[float("nan"), 1.0, 0.0]])
    assert topk_hits(nan, torch.tensor([0]), 1).item() == 0 and topk_hits(nan, torch.tensor([0]), 5).item() == 0


@pytest.mark.parametrize("sizes", [[5], [1, 1, 1, 1, 1], [2, 3], [3, 1, 1]])
def test_errors_and_entropy_match_the_hand_computation_however_the_test_set_is_batched(sizes):
    model = Lookup([s[0] for s in SAMPLES])
    got = evaluate_model(model, batches(SAMPLES, sizes), nullcontext())
    want = expected(SAMPLES)
    # by hand: top-1 credit 1 + 1/2 + 1/6 = 5/3 of 5 -> 66.67% error; top-5 credit 3.5 of 5 -> 30% error
    assert want["top1_err"] == pytest.approx(200 / 3) and want["top5_err"] == pytest.approx(30.0)
    assert got["top1_err"] == pytest.approx(want["top1_err"], abs=1e-4)
    assert got["top5_err"] == pytest.approx(want["top5_err"], abs=1e-4)
    assert got["entropy"] == pytest.approx(want["entropy"], abs=1e-5)


def test_fewer_than_five_classes():
    """With 3 classes every target is in the top 5; top-1 still counts ties by their share."""
    samples = [([0.5, 2.0, 1.0], 1, 1, 1), ([0.5, 2.0, 1.0], 2, 0, 1), ([1.0, 1.0, 1.0], 0, 1 / 3, 1)]
    got = evaluate_model(Lookup([s[0] for s in samples]), batches(samples, [2, 1]), nullcontext())
    assert got["top5_err"] == 0.0
    assert got["top1_err"] == pytest.approx(100 * (1 - (4 / 3) / 3), abs=1e-4)
    assert got["entropy"] == pytest.approx((2 * entropy_by_hand([0.5, 2.0, 1.0]) + math.log(3)) / 3, abs=1e-5)


def test_evaluation_restores_train_mode():
    model = Lookup([s[0] for s in SAMPLES]).train()
    evaluate_model(model, batches(SAMPLES, [5]), nullcontext())
    assert model.training


# -- over DDP ranks --------------------------------------------------------------------------------
RANKS = """
import json, sys, torch
from contextlib import nullcontext
from kd_methods.data.tensor_loader import TensorLoader
from kd_methods.engine import distributed as dist
from kd_methods.engine.metrics import evaluate_model

dist.init_from_env("cpu")
torch.manual_seed(0)
head = torch.nn.Linear(3 * 4 * 4, 7)


class Rounded(torch.nn.Module):  # coarse logits: many ties
    def __init__(self):
        super().__init__()
        self.head = head

    def forward(self, x):
        return (self.head(x.flatten(1)) * 2).round()


g = torch.Generator().manual_seed(1)
out = {}
for n in map(int, sys.argv[2:]):
    images = torch.randint(0, 256, (n, 3, 4, 4), dtype=torch.uint8, generator=g)
    targets = torch.randint(0, 7, (n,), generator=g)
    loader = TensorLoader(images, targets, batch_size=3, mean=(0.5,) * 3, std=(0.25,) * 3, train=False,
                          rank=dist.rank(), world_size=dist.world_size())
    out[n] = dict(evaluate_model(Rounded(), loader, nullcontext()), seen=sum(len(t) for _, t in loader))
with open(f"{sys.argv[1]}.rank{dist.rank()}", "w") as f:
    json.dump(out, f)
dist.shutdown()
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_ranks(script, args, world: int = 2) -> None:
    """`script args` as `world` gloo ranks (the environment torchrun would give them, without its launcher)."""
    port = str(free_port())
    procs = [subprocess.Popen([sys.executable, str(script), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env=dict(ENV, MASTER_ADDR="127.0.0.1", MASTER_PORT=port, RANK=str(r),
                                                  LOCAL_RANK=str(r), WORLD_SIZE=str(world)))
             for r in range(world)]
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-3000:]


@pytest.mark.slow
def test_two_ranks_score_exactly_what_one_process_scores(tmp_path, monkeypatch):
    """11 images over 2 ranks: blocks of 6 and 5, batches of 3 (the last partial); 1 image: rank 1's
    block is empty. Both ranks report the one-process numbers."""
    script = tmp_path / "ranks.py"
    script.write_text(RANKS)
    sizes = ["11", "1"]
    monkeypatch.setattr(sys, "argv", [str(script), str(tmp_path / "one"), *sizes])
    runpy.run_path(str(script), run_name="__main__")  # one process: this one
    run_ranks(script, [str(tmp_path / "two"), *sizes])
    one = json.loads((tmp_path / "one.rank0").read_text())
    ranks = [json.loads((tmp_path / f"two.rank{r}").read_text()) for r in (0, 1)]
    assert [r["11"]["seen"] for r in ranks] == [6, 5] and [r["1"]["seen"] for r in ranks] == [1, 0]
    for n in sizes:
        for r in ranks:
            assert {k: r[n][k] for k in ("top1_err", "top5_err")} == {k: one[n][k] for k in ("top1_err", "top5_err")}
            assert r[n]["entropy"] == pytest.approx(one[n]["entropy"], abs=1e-5)
    assert 0 < one["11"]["top1_err"] < 100 and one["11"]["top1_err"] * 11 / 100 % 1 != 0  # ties did occur
