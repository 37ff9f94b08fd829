"""Why FSP's claims reversed on real data (results/claims/fsp.md): a diagnosis, run by hand.

The FSP student starts its second stage far ahead of the scratch ResNet-8 (after one epoch 25.8% test
error against 37.1%: the paper's "fast optimisation") but learns more slowly from there and ends worse.
The hypothesis tested here: stage 1 minimises Eq. 2, a sum of squared FSP-matrix differences in the
hundreds, at lr 1e-3 with momentum, which inflates the convolution weights; every convolution of the
ResNet feeds a batch norm, so its output does not depend on the weights' scale, but its gradient shrinks
as 1/||w|| and a step's relative change as 1/||w||^2: with weights k times their initial norm, stage 2's
lr 0.1 acts like 0.1/k^2. Per seed this script

1. trains stage 1 alone (the claims' FSP spec with its second stage skipped; the teacher run is reused),
2. compares every convolution's weight norm with a fresh initialisation of the same seed,
3. rescales each convolution of the stage-1 weights to its initial norm (what it computes in training mode
   is unchanged; only the effective step size of what follows is) and trains stage 2 from there, and
4. writes the norms and the three final errors (scratch, FSP, FSP rescaled) to `--out`.

    python -m benchmarks.fsp_diagnosis --runs-dir runs --out results/claims/diagnosis/fsp_weight_norms.md
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import statistics
from pathlib import Path

import torch

from kd_methods.engine.trainer import EngineOptions
from kd_methods.models import create_model
from kd_methods.runs.runner import RunContext, execute, load_run_model
from kd_methods.runs.spec import SKIPPED, Pretrained, resolve
from kd_methods.runs.store import RunStore, cpu_model

from . import claims

LABELS = dict(paper="claims", table="fsp_diagnosis")


def conv_norms(model: torch.nn.Module) -> dict[str, float]:
    return {n: float(m.weight.detach().norm()) for n, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)}


def rescaled(model: torch.nn.Module, norms: dict[str, float]) -> dict[str, torch.Tensor]:
    """`model`'s state with each named convolution's weight scaled to the given norm: behind a batch norm
    in training mode the network computes the same function, only its effective step size changes."""
    state = {k: v.clone() for k, v in model.state_dict().items()}
    current = conv_norms(model)
    for name, norm in norms.items():
        state[f"{name}.weight"] *= norm / current[name]
    return state


def fresh(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)  # the engine's draw: seed, then the student
    return create_model(claims.STUDENT, num_classes=10, in_chans=1)


def run(spec, ctx: RunContext, label: str) -> tuple[dict, torch.nn.Module]:
    cfg = resolve(dataclasses.replace(spec, label=label, **LABELS), "paper", data="real")
    result = execute(cfg, ctx)
    return result, load_run_model(cfg, ctx.store)


def diagnose(seed: int, ctx: RunContext, weights_dir: Path) -> dict:
    teacher = claims.teacher()
    scratch_result, scratch = run(claims.spec(claims.STUDENT, seed=seed), ctx, "scratch")
    fsp_spec = claims.spec(claims.STUDENT, "fsp", [teacher], seed, {"fsp": claims.FSP_STAGE, "train": claims.PROTOCOL})
    fsp_result, fsp_final = run(fsp_spec, ctx, "FSP")
    _, stage1 = run(claims.spec(claims.STUDENT, "fsp", [teacher], seed, {"fsp": claims.FSP_STAGE, "train": SKIPPED}),
                    ctx, "FSP stage 1 only")
    init = conv_norms(fresh(seed))
    after = conv_norms(stage1)
    state = rescaled(stage1, init)
    weights_dir.mkdir(parents=True, exist_ok=True)
    path = weights_dir / f"fsp_stage1_rescaled_seed{seed}.pt"
    torch.save(state, path)
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    rescaled_spec = dataclasses.replace(claims.spec(claims.STUDENT, seed=seed),
                                        init=Pretrained(claims.STUDENT, str(path), sha, num_classes=10))
    rescaled_result, _ = run(rescaled_spec, ctx, "FSP stage 1 rescaled, then labels")
    return dict(seed=seed, init=init, stage1=after, scratch_final=conv_norms(scratch),
                fsp_final=conv_norms(fsp_final), errors=dict(scratch=scratch_result["top1_err"],
                                                                   fsp=fsp_result["top1_err"],
                                                                   rescaled=rescaled_result["top1_err"]))


def report(found: list[dict]) -> str:
    def ratio(key):  # the conv weights' norm against the fresh init's, over layers and seeds
        rs = [f[key][n] / f["init"][n] for f in found for n in f["init"]]
        return f"{statistics.fmean(rs):.2f} (range {min(rs):.2f}-{max(rs):.2f})"

    def err(key):
        vs = [f["errors"][key] for f in found]
        return f"{statistics.fmean(vs):.2f} ± {statistics.stdev(vs) if len(vs) > 1 else 0:.2f}"

    seeds = ", ".join(str(f["seed"]) for f in found)
    lines = [
        "# FSP on real data: why the claims reversed (diagnosis)",
        "",
        f"Produced by `python -m benchmarks.fsp_diagnosis` (seeds {seeds}; the claims benchmark's FSP protocol, "
        f"budget paper, real Fashion-MNIST, {cpu_model()}, one thread, bf16 where the CPU has it). See the script's "
        "docstring for the hypothesis.",
        "",
        "| convolution weights, norm / fresh init's (mean over layers and seeds) | ratio |",
        "|---|---|",
        f"| after FSP stage 1 | {ratio('stage1')} |",
        f"| FSP student at the end of stage 2 | {ratio('fsp_final')} |",
        f"| scratch ResNet-8 at the end of training | {ratio('scratch_final')} |",
        "",
        "| final test error (%), mean ± std over seeds | |",
        "|---|---|",
        f"| ResNet-8 alone | {err('scratch')} |",
        f"| FSP (stage 1, then labels) | {err('fsp')} |",
        f"| FSP stage 1 with each convolution rescaled to its initial norm, then labels | {err('rescaled')} |",
        "",
        "Per seed (error: scratch / FSP / rescaled): " + "; ".join(
            f"seed {f['seed']}: {f['errors']['scratch']:.2f} / {f['errors']['fsp']:.2f} / {f['errors']['rescaled']:.2f}"
            for f in found),
    ]
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs-dir", default="runs")
    p.add_argument("--results-dir", default="runs/fsp_diagnosis_results", help="the runs' rows (not results/)")
    p.add_argument("--seeds", type=int, default=claims.SEEDS)
    p.add_argument("--out", default="results/claims/diagnosis/fsp_weight_norms.md")
    a = p.parse_args(argv)
    ctx = RunContext(store=RunStore(a.runs_dir), results_dir=Path(a.results_dir),
                     opts=EngineOptions(progress=False), log=print)
    found = [diagnose(s, ctx, Path(a.runs_dir) / "fsp_diagnosis") for s in range(a.seeds)]
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(report(found))
    print(out.read_text())


if __name__ == "__main__":
    main()
