"""Run folders and results tables.

A run lives in `<runs_dir>/<run_id>/`:
  config.json     the resolved config (what the id hashes)
  manifest.json   git commit, versions, device, host and pid, start/end times, status (running|finished|failed)
  metrics.csv     one row per epoch
  last.pt         the latest checkpoint (+ last.pt.prev, the one before); removed once the run finishes
  model.pt        the final weights of the method's eval models (what a later run loads as teacher)
  result.json     final metrics; its presence marks the run finished

`results/<paper>/runs.csv` holds one row per finished run and table, and `results/<paper>/curves.csv` the
per-epoch rows of those runs and their teachers (once per run): everything the reports and plots read, so
results/ re-renders without runs/, which holds checkpoints and working files only. Both are written under
a file lock and atomically, so concurrent reproductions lose no rows and a kill never truncates a file; a
damaged file is named with its line and never rewritten.
"""
from __future__ import annotations

import csv
import fcntl
import io
import json
import os
import platform
import socket
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path

import torch

from ..engine.checkpoint import write_atomic
from ..errors import ResultsDamaged

RUNS_COLUMNS = ["run_id", "paper", "table", "label", "dataset", "model", "method", "seed", "budget", "epochs",
                "top1_err", "top5_err", "best_top1_err", "wall_s", "config_hash", "status", "device",
                "finished_at", "extra", "teachers", "init"]   # teachers, init: the run ids it learnt from / started from
# results/<paper>/curves.csv: the per-epoch rows (metrics.csv, less its timings) of every run in runs.csv
# and of its teachers, once per run: what the plots draw, so results/ re-renders without runs/.
CURVES_LEAD = ["run_id", "epoch", "stage", "stage_epoch", "stage_iteration"]
CURVES_SKIP = ("wall_s",)


def write_json(path: Path, obj) -> None:
    blob = json.dumps(obj, indent=2, sort_keys=True, default=str).encode()
    write_atomic(Path(path), lambda f: f.write(blob))


def read_json(path: Path):
    return json.loads(Path(path).read_text())


@contextmanager
def file_lock(path: Path, on_wait=None):
    """An exclusive advisory lock held for the block (blocks until it is free; calls `on_wait()` first
    when another process holds it). The kernel releases it when its holder dies, even by SIGKILL."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if on_wait is not None:
                on_wait()
            fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def git_commit() -> str:
    try:
        root = Path(__file__).resolve().parents[2]
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "--short=12", "HEAD"], capture_output=True,
                             text=True, timeout=5)
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "") if out.returncode == 0 else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def device_name(device: torch.device, precision: str = "") -> str:
    """What trained a run, for reports: the GPU model, or the CPU model and threads; then the arithmetic
    (bf16 autocast or fp32: a CPU without native bf16 trains in fp32); x N under DDP."""
    from ..engine.distributed import world_size

    name = (torch.cuda.get_device_name(device) if device.type == "cuda"
            else f"{cpu_model()}, {torch.get_num_threads()} threads")
    name += f", {precision}" if precision else ""
    return name + (f" x {world_size()} processes" if world_size() > 1 else "")


def versions() -> dict:
    import timm
    import torchvision
    return dict(python=platform.python_version(), torch=torch.__version__, torchvision=torchvision.__version__,
                timm=timm.__version__, cuda=torch.version.cuda, cudnn=torch.backends.cudnn.version())


class RunStore:
    def __init__(self, root: str | Path = "runs"):
        self.root = Path(root)

    def dir(self, run_id: str) -> Path:
        return self.root / run_id

    def is_finished(self, run_id: str) -> bool:
        return (self.dir(run_id) / "result.json").is_file()

    def result(self, run_id: str) -> dict:
        return read_json(self.dir(run_id) / "result.json")

    def metrics(self, run_id: str) -> list[dict]:
        """The run's metrics.csv rows as written (text), [] when it has none."""
        path = self.dir(run_id) / "metrics.csv"
        if not path.is_file():
            return []
        with open(path, newline="") as f:
            return list(csv.DictReader(f))

    @contextmanager
    def lock(self, run_id: str, on_wait=None):
        """One process trains a run; a second one waits, then finds it finished."""
        with file_lock(self.root / ".locks" / f"{run_id}.lock", on_wait):
            yield

    def start(self, cfg: dict, device: torch.device) -> Path:
        d = self.dir(cfg["run_id"])
        d.mkdir(parents=True, exist_ok=True)
        write_json(d / "config.json", cfg)
        manifest_path = d / "manifest.json"
        previous = read_json(manifest_path) if manifest_path.is_file() else {}
        manifest = dict(run_id=cfg["run_id"], git_commit=git_commit(), versions=versions(),
                        device=device_name(device), host=socket.gethostname(), pid=os.getpid(),
                        started_at=previous.get("started_at", time.strftime("%Y-%m-%dT%H:%M:%S%z")),
                        resumed=previous.get("resumed", -1) + 1, status="running")
        write_json(manifest_path, manifest)
        return d

    def undo_start(self, run_id: str, manifest: bytes | None) -> None:
        """Put back the manifest `start` replaced, or remove what `start` wrote into a new run folder."""
        d = self.dir(run_id)
        if manifest is not None:
            write_atomic(d / "manifest.json", lambda f: f.write(manifest))
            return
        for name in ("manifest.json", "config.json"):
            (d / name).unlink(missing_ok=True)
        if d.is_dir() and not any(d.iterdir()):
            d.rmdir()

    def update_manifest(self, run_id: str, **fields) -> None:
        path = self.dir(run_id) / "manifest.json"
        manifest = read_json(path) if path.is_file() else {}
        manifest.update(fields)
        write_json(path, manifest)


def _write_csv(path: Path, columns: list[str], rows: list[dict]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns)
    writer.writeheader()
    writer.writerows(rows)
    write_atomic(path, lambda f: f.write(buf.getvalue().encode()))


def append_results_row(results_dir: Path, paper: str, row: dict,
                       curves: dict[str, list[dict]] | None = None) -> None:
    """Add (or refresh) the row keyed by (run_id, table, label) in results/<paper>/runs.csv, and the
    per-epoch rows `curves` (run_id -> metrics rows) in results/<paper>/curves.csv, atomically."""
    path = Path(results_dir) / paper / "runs.csv"
    with file_lock(path.with_name(".runs.csv.lock")):
        for stale in path.parent.glob(".*.csv.tmp*"):  # left by a writer killed mid-write
            stale.unlink(missing_ok=True)
        rows = read_results(path)
        curve_path = path.with_name("curves.csv")
        old_curves = read_csv_rows(curve_path) if curves else []
        def key(r):
            return r["run_id"], r.get("table", ""), r.get("label", "")
        rows = [r for r in rows if key(r) != key(row)] + [
            {c: row.get(c, "") for c in RUNS_COLUMNS}]
        _write_csv(path, RUNS_COLUMNS, rows)
        if curves:
            new = [dict(r, run_id=run_id) for run_id, history in curves.items() for r in history]
            kept = [r for r in old_curves if r["run_id"] not in curves] + new
            seen = {k for r in kept for k in r}
            columns = [c for c in CURVES_LEAD if c in seen] + sorted(seen - set(CURVES_LEAD) - set(CURVES_SKIP))
            _write_csv(curve_path, columns, [{c: r.get(c, "") for c in columns} for r in kept])


def read_csv_rows(path: Path) -> list[dict]:
    """Rows of a CSV this module wrote ([] when there is none); see `_read_csv`."""
    return [row for _, row in _read_csv(Path(path))]


def _read_csv(path: Path) -> list[tuple[int, dict]]:
    """(line, row) of each row; ResultsDamaged, with the line, for a file that is not UTF-8 text, has no
    header naming a run_id column, or a row whose fields do not match the header."""
    if not path.is_file():
        return []
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise _damaged(path, raw[:e.start].count(b"\n") + 1, f"byte 0x{raw[e.start]:02x} is not UTF-8 text") from None
    reader = csv.reader(io.StringIO(text, newline=""))
    rows = []
    try:
        header = next(reader, None) or []
        if "run_id" not in header:
            raise _damaged(path, 1, "no header naming its columns")
        for fields in reader:
            if fields and len(fields) != len(header):
                raise _damaged(path, reader.line_num, f"{len(fields)} fields where the header has {len(header)}")
            if fields:
                rows.append((reader.line_num, dict(zip(header, fields))))
    except csv.Error as e:
        raise _damaged(path, reader.line_num + 1, str(e)) from None
    return rows


def _damaged(path: Path, line: int, what: str) -> ResultsDamaged:
    return ResultsDamaged(f"{path} line {line} is damaged ({what}); fix or delete that line and run the "
                          f"command again (a damaged results file is never rewritten)")


REQUIRED_COLUMNS = ("run_id", "table", "label", "budget", "status")
NUMBER_COLUMNS = ("seed", "epochs", "top1_err", "top5_err", "best_top1_err", "wall_s")


def read_results(path: Path) -> list[dict]:
    """The rows of a runs.csv ([] when there is none). A file that does not parse (not text, a row with
    the wrong number of fields, a number or `extra` that does not read) raises ResultsDamaged naming the
    file and line: the caller stops before writing it, so a damaged file is never overwritten."""
    path = Path(path)
    rows = _read_csv(path)
    missing = [c for c in REQUIRED_COLUMNS if rows and c not in rows[0][1]]
    if missing:
        raise _damaged(path, 1, f"the header has no '{missing[0]}' column")
    for line, row in rows:
        for column in NUMBER_COLUMNS:
            value = row.get(column, "")
            try:
                value == "" or float(value)
            except ValueError:
                raise _damaged(path, line, f"{column} is {value[:20]!r}, not a number") from None
        try:
            extra = json.loads(row["extra"]) if row.get("extra") else {}
        except ValueError:
            extra = None
        if not isinstance(extra, dict):
            raise _damaged(path, line, "its extra column is not a JSON object")
    return [row for _, row in rows]


def read_curves(path: Path) -> dict[str, list[dict]]:
    """results/<paper>/curves.csv as run_id -> per-epoch rows, numbers as floats (empty cells dropped)."""
    curves: dict[str, list[dict]] = {}
    for r in read_csv_rows(path):
        curves.setdefault(r["run_id"], []).append({k: _number(v) for k, v in r.items() if k != "run_id" and v != ""})
    return curves


def _number(v: str):
    try:
        return float(v)
    except ValueError:
        return v


def check_results(results_dir: Path, paper: str) -> None:
    """Before any training: results/<paper>/runs.csv, which the run will add a row to, reads."""
    read_results(Path(results_dir) / paper / "runs.csv")
