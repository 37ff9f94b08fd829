"""`kd-bench`: run one experiment, reproduce a paper's tables, plan what that costs, render reports, benchmark speed.

Exit codes (README "Exit codes"): 0 done; 2 bad input (bad config or arguments, missing data, a corrupt
checkpoint, a pretrained file failing its sha256): one line on stderr, and nothing is written; 3 training
diverged (NaN or inf): one line, the last good checkpoint kept, the failure recorded in the manifest and
runs.csv; 4 a torchrun peer died; 130 interrupted (Ctrl-C) and 143 stopped by SIGTERM: the same command
resumes; 1 anything else, which is a bug (with its traceback). Under torchrun every rank runs this; rank 0
alone logs and writes.
"""
from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import warnings
from pathlib import Path

from .errors import DiskFull, NumericalFault, RunsFailed, UserError, disk_full

PAPERS = ("feed", "dml", "fitnets", "fsp", "tsd", "claims")


class Parser(argparse.ArgumentParser):
    """argparse whose errors are one line, as every other bad input's (its usage is a --help away)."""

    def error(self, message: str):
        self.exit(2, f"kd-bench: error: {self.prog}: {printable(message)}; see {self.prog} --help\n")


def _selection(p: argparse.ArgumentParser) -> None:
    p.add_argument("paper", choices=PAPERS)
    p.add_argument("--tables", nargs="*", default=None, help="only these tables (e.g. table1 table2)")
    p.add_argument("--seeds", type=int, default=None,
                   help="train at most this many seeds per cell, overriding the budget's cap (short: 2, smoke: 1); "
                        "a cell never trains more seeds than it lists")


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--budget", default=os.environ.get("BUDGET", "paper"), choices=["smoke", "short", "paper"],
                   help="paper: the paper's protocol; short: 1/10 schedules; smoke: a few steps on synthetic data")
    p.add_argument("--data", default=os.environ.get("DATA", "auto"), choices=["auto", "synthetic", "real"],
                   help="dataset source: auto = real data, synthetic under --budget smoke")
    p.add_argument("--data-root", default=os.environ.get("KD_DATA", "data"), help="where real datasets live")
    p.add_argument("--runs-dir", default=os.environ.get("KD_RUNS", "runs"), help="run folders (checkpoints)")
    p.add_argument("--results-dir", default=os.environ.get("KD_RESULTS", "results"), help="runs.csv and reports")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--compile", action="store_true", help="torch.compile the student and teachers")
    p.add_argument("--no-amp", action="store_true", help="train in fp32 (default: bf16 autocast on CUDA and on CPUs with native bf16)")
    p.add_argument("--deterministic", action="store_true", help="deterministic algorithms (slower)")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="progress bars (default: on an interactive terminal outside CI)")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="kd-bench", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("run", help="train one experiment spec (YAML)")
    p.add_argument("config", help="path of a YAML experiment spec, e.g. configs/scratch_resnet20_synthetic.yaml")
    p.add_argument("--seed", type=int, default=None, help="override the spec's seed")
    _common(p)

    p = sub.add_parser("reproduce", help="train every missing run of a paper's tables, then render its report")
    _selection(p)
    _common(p)
    p.add_argument("--executor", default="sequential", choices=["sequential", "ray"],
                   help="sequential: one run after another in this process (default); ray: every run a Ray task, "
                        "started as soon as its teachers finished (README 'Scaling out')")
    p.add_argument("--address", default=None,
                   help="ray: the cluster to join (auto, or HOST:PORT of `ray start --head`); default: a Ray "
                        "instance on this machine")
    p.add_argument("--gpus-per-run", type=float, default=None,
                   help="ray: GPUs per run, fractions pack several runs on one GPU (0.25: four); default 1 on a "
                        "cluster with GPUs, else 0")
    p.add_argument("--cpus-per-run", type=int, default=None,
                   help="ray: CPUs per run, also its torch threads (default 1)")

    p = sub.add_parser("plan", help="list every run of a paper's tables with its status and cost; writes nothing")
    _selection(p)
    p.add_argument("--budget", default=os.environ.get("BUDGET", "paper"), choices=["smoke", "short", "paper"])
    p.add_argument("--data", default=os.environ.get("DATA", "auto"), choices=["auto", "synthetic", "real"])
    p.add_argument("--data-root", default=os.environ.get("KD_DATA", "data"))
    p.add_argument("--runs-dir", default=os.environ.get("KD_RUNS", "runs"))
    p.add_argument("--gpu", default="H100", help="the GPU to estimate times for (a name from the peak table, e.g. "
                                                 "H100, A100, L4)")
    p.add_argument("--gpu-util", type=float, default=None,
                   help="fraction of the GPU's bf16 peak a run reaches (default: measured by make bench where it "
                        "was, else an assumption the output names)")
    p.add_argument("--no-measure", dest="measure", action="store_false",
                   help="do not time training steps on this machine (no time estimates for it)")
    p.add_argument("--json", action="store_true", help="print the plan as JSON")

    p = sub.add_parser("report", help="re-render tables and plots from results/<paper>/runs.csv")
    p.add_argument("papers", nargs="*", default=list(PAPERS))
    p.add_argument("--results-dir", default=os.environ.get("KD_RESULTS", "results"))

    p = sub.add_parser("bench", help="time training steps against a textbook reference loop")
    p.add_argument("--device", default="auto")
    p.add_argument("--out", default="results/bench")
    p.add_argument("--quick", action="store_true", help="fewer repeats (for CI)")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                   help="time a torch.compile case and report its compile time (default: on CUDA only)")

    p = sub.add_parser("download", help="download a dataset with checksum verification (needs internet), or "
                                        "install MNIST / Fashion-MNIST from local IDX files (--from)")
    p.add_argument("name", choices=["cifar10", "cifar100", "svhn", "mnist", "fashion_mnist"])
    p.add_argument("--from", dest="source", metavar="DIR", default=None,
                   help="offline: install mnist or fashion_mnist from DIR's four IDX files (raw or .gz), "
                        "each checked against its recorded sha256")
    p.add_argument("--data-root", default=os.environ.get("KD_DATA", "data"))
    return parser


def _log(msg: str) -> None:
    from .engine import distributed as dist
    if dist.is_main():  # under torchrun rank 0 speaks for the job
        print(msg, flush=True)


def _context(args):
    from .engine.trainer import EngineOptions
    from .runs.runner import RunContext
    from .runs.store import RunStore

    opts = EngineOptions(device=args.device, amp=not args.no_amp, compile=args.compile,
                         progress=args.progress, deterministic=args.deterministic)
    return RunContext(store=RunStore(args.runs_dir), results_dir=Path(args.results_dir), opts=opts,
                      log=_log)


def cmd_run(args) -> int:
    from .engine import distributed as dist
    from .runs.preflight import preflight
    from .runs.runner import execute
    from .runs.spec import load_spec, resolve

    spec = load_spec(args.config)
    if args.seed is not None:
        spec.seed = args.seed
    cfg = resolve(spec, args.budget, data=args.data, data_root=args.data_root)
    if spec.paper:
        from .runs.store import check_results
        check_results(Path(args.results_dir), spec.paper)
    preflight([cfg])
    result = execute(cfg, _context(args))
    if not dist.is_main():
        return 0
    print(f"run {cfg['run_id']}: top-1 error {result['top1_err']:.2f}% (best {result['best_top1_err']:.2f}%), "
          f"top-5 error {result['top5_err']:.2f}% after {result['epochs']} epochs -> "
          f"{Path(args.runs_dir) / cfg['run_id']}")
    return 0


def _check_seeds(args) -> None:
    from .errors import ConfigError
    if args.seeds is not None and args.seeds < 1:
        raise ConfigError(f"--seeds must be >= 1, got {args.seeds}")


def cmd_reproduce(args) -> int:
    from benchmarks import reproduce
    from .runs.executors import get_executor
    _check_seeds(args)
    executor = get_executor(args.executor, address=args.address, gpus_per_run=args.gpus_per_run,
                            cpus_per_run=args.cpus_per_run)
    reproduce(args.paper, budget=args.budget, data=args.data, data_root=args.data_root,
              ctx=_context(args), tables=args.tables, seeds=args.seeds, executor=executor)
    return 0


def cmd_plan(args) -> int:
    import json

    from benchmarks import get_paper
    from .errors import ConfigError
    from .runs.plan import make_plan, render_text
    _check_seeds(args)
    if args.gpu_util is not None and not 0 < args.gpu_util <= 1:
        raise ConfigError(f"--gpu-util must be in (0, 1], got {args.gpu_util}")
    plan = make_plan(get_paper(args.paper), args.budget, args.data, args.data_root, args.tables, args.seeds,
                     args.runs_dir, gpu=args.gpu, gpu_util=args.gpu_util, measure=args.measure)
    print(json.dumps(plan, indent=1, default=str) if args.json else render_text(plan), end="" if not args.json else "\n")
    return 0


def cmd_report(args) -> int:
    from benchmarks import render
    render(args.papers, results_dir=Path(args.results_dir))
    return 0


def cmd_bench(args) -> int:
    from .bench import main as bench_main
    return bench_main(device=args.device, out=Path(args.out), quick=args.quick, compile=args.compile)


def cmd_download(args) -> int:
    if args.source is not None:
        from .data.files import import_idx
        where = import_idx(args.name, args.source, args.data_root)
        print(f"{args.name}: the four IDX files match their recorded sha256 and are in {where}")
        return 0
    from .data import download
    download(args.name, args.data_root)
    return 0


COMMANDS = {"run": cmd_run, "reproduce": cmd_reproduce, "plan": cmd_plan, "report": cmd_report, "bench": cmd_bench,
            "download": cmd_download}


class Stopped(Exception):
    """SIGTERM: how torchrun stops the other ranks when one fails, and how SLURM ends a job."""


def _raise_stopped(signum, frame):
    raise Stopped()


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:  # --help (0), or a bad argument (2, its one line already printed)
        return e.code
    from .engine import distributed as dist
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _raise_stopped) if in_main_thread else None
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _one_line_warnings(warnings.showwarning)
            dist.init_from_env(getattr(args, "device", "auto"))
            _check_args(args)
            status = COMMANDS[args.command](args)
        dist.shutdown()
        return status
    except UserError as e:
        print(f"kd-bench: {_where(dist)}error: {printable(str(e))}", file=sys.stderr)
        return 2
    except NumericalFault as e:
        print(f"kd-bench: {_where(dist)}training diverged: {printable(str(e))}", file=sys.stderr)
        return 3
    except RunsFailed as e:
        print(f"kd-bench: {e}", file=sys.stderr)
        return e.code
    except DiskFull as e:
        print(f"kd-bench: {_where(dist)}{printable(str(e))}", file=sys.stderr)
        return 5
    except KeyboardInterrupt:
        print("kd-bench: interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    except Stopped:
        why = " (torchrun stops every rank when one fails; its summary names the failed rank)" \
            if dist.is_distributed() else ""
        print(f"kd-bench: {_where(dist)}stopped by SIGTERM{why}; the last checkpoint is kept: run the same "
              f"command again to resume", file=sys.stderr)
        return 143
    except Exception as e:
        full = disk_full(e)
        if full:  # a write outside the atomic writer (a plot, a log)
            print(f"kd-bench: {_where(dist)}no space left on the device ({printable(str(full))}); free space "
                  f"and run the same command again", file=sys.stderr)
            return 5
        if not (dist.is_distributed() and dist.is_peer_failure(e)):
            raise
        print(f"kd-bench: {dist.peer_failure_message(e)}", file=sys.stderr)
        return 4
    finally:
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous)


def _check_args(args) -> None:
    """Arguments every command shares, checked before any work: the device exists here, and the folders
    it writes are folders (or can become ones)."""
    from .engine.trainer import pick_device
    from .errors import ConfigError

    if getattr(args, "device", None) is not None:
        pick_device(args.device)
    for flag in ("runs_dir", "results_dir", "out"):
        value = getattr(args, flag, None)
        if value is None:
            continue
        option = "--" + flag.replace("_", "-")
        path = Path(value)
        if not value or (path.exists() and not path.is_dir()):
            raise ConfigError(f"{option} {value!r} is not a folder; pass a folder path")
        existing = next((p for p in [path, *path.absolute().parents] if p.exists()), None)
        if existing is None or not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
            raise ConfigError(f"{option} {value!r}: cannot write under {existing}; pass a folder you can write to")


def printable(message: str) -> str:
    """One line: control characters (a newline inside a quoted YAML key, say) shown as escapes."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in message)


def _one_line_warnings(default):
    """Our own warnings (a damaged checkpoint skipped for the previous one, ...) as one stderr line each."""
    package = Path(__file__).resolve().parent

    def show(message, category, filename, lineno, file=None, line=None):
        if Path(filename).resolve().is_relative_to(package):
            print(f"kd-bench: warning: {message}", file=file or sys.stderr)
        else:
            default(message, category, filename, lineno, file, line)
    return show


def _where(dist) -> str:
    """'rank r of n: ' under torchrun (every rank reports its own errors), else nothing."""
    return f"rank {dist.rank()} of {dist.world_size()}: " if dist.is_distributed() else ""


if __name__ == "__main__":
    sys.exit(main())
