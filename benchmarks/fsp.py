"""FSP: Yim, Joo, Bae & Kim, "A Gift from Knowledge Distillation: Fast Optimization, Network Minimization
and Transfer Learning", CVPR 2017.

The teacher's knowledge is its flow of solution procedure: the FSP (Gram) matrix between the first and
the last feature map of each residual section. Stage 1 (`fsp`) trains the student to reproduce the
teacher's FSP matrices; stage 2 (`train`) trains it on the labels from those weights (method `fsp`).
Paper values are recognition rates (top-1 accuracy, %).

What is declared here, and how cells map to runs:

- Table 1 (`table1`, CIFAR-10, ResNet-26 teacher and students, "fast optimisation"): rows are the
  paper's rows (Teacher; Teacher∗, trained for 1/3 of the iterations; Teacher-double-dagger, 21k more
  iterations from the Teacher; FitNet with 1 and with 3 hint losses; the FSP Student∗; the dagger Student
  whose stage 1 matches a randomly shuffled FSP matrix). Columns net1..net3 are the paper's three
  networks (three seeds, a distinct block per row); `avg` is the mean over the three runs; `ensemble of 3`
  is a label ensemble (method `ensemble`) of the row's three runs. Every distilled row learns from the
  Teacher net1 run. The Student∗ networks branch from one shared stage-1 run (`fsp_stage1`: stage 2
  skipped), each training its own stage 2 from that run's student (`fsp_branch`: stage 1 skipped), as the
  paper's 84k iterations for 3 nets say (21k + 3 x 21k); the dagger networks each run their own stage 1
  (126k = 3 x (21k + 21k)), which is what makes them less alike.
- Table 2 (`table2`, CIFAR-100 without augmentation, 32-layer ResNet with 4x channels): the same layout
  with the rows Teacher, Teacher∗, FitNet∗, Student∗ (95k = 32k + 3 x 21k: one stage 1 again).
- Table 3 (`table3`, CIFAR-10 network minimisation): a ResNet-26 teacher trained like Table 1's (its
  own run: its published accuracy is none of Table 1's), ResNet-8 student from scratch, with FitNet hints,
  with FSP.
- Table 4 (`table4`, CIFAR-100 without augmentation): the teacher is Table 2's Teacher net1 run (the
  32-layer ResNet with 4x channels: the paper prints the same 64.06 for both), the student the 14-layer
  ResNet with 4x channels; same rows.
- Table 5 (`table5`, CUB-200-2011 transfer learning): ResNet-34 fine-tuned from torchvision's ImageNet
  weights (method `finetune`), ResNet-34 and the student from scratch, FitNet and FSP students taught by
  the fine-tuned ResNet-34. Needs data/cub200 and data/pretrained/resnet34-b627a593.pth; reported
  "not run" without them.

`accuracy_vs_iteration.png` plots the test accuracy of each row's net1 run of Tables 1 and 2 against the
optimiser iterations it has used (stage 1 included), the paper's "fast optimisation" argument.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from kd_methods.runs.spec import SKIPPED, ExperimentSpec, Optim, Phase, Pretrained

from .core import Cell, Paper, Plot, Table
from .plots import cell_runs, figure_title, read_metrics, save

KEY = "fsp"
N_NETS = 3              # the paper's net1..net3 of Tables 1-2
BATCH = 128             # not stated in the paper (assumed)
CUB_BATCH = 64          # assumed (224-pixel images)


def sgd(lr: float, milestones) -> Optim:
    """The paper's optimiser: momentum 0.9, weight decay 1e-4; lr x0.1 at each milestone."""
    return Optim("sgd", lr=lr, momentum=0.9, weight_decay=1e-4, schedule="multistep",
                 milestones=[float(m) for m in milestones])


def iters(length: int, lr: float, milestones) -> Phase:
    return Phase(length, "iter", sgd(lr, milestones))


# CIFAR protocols (Sec. 4.1-4.2): the teacher, lr 0.1 / 0.01 / 0.001 with steps at 32k and 48k, 64k iterations.
FULL = iters(64_000, 0.1, [32_000, 48_000])
# One third of it: lr 0.1 / 0.01 / 0.001 until 11k / 16k / 21k (Teacher∗, and stage 2 of every fast-
# optimisation student).
THIRD = iters(21_000, 0.1, [11_000, 16_000])
# FSP stage 1: lr 1e-3 / 1e-4 / 1e-5 until 11k / 16k / 21k (CIFAR-10) or 16k / 24k / 32k (CIFAR-100).
STAGE1 = {"cifar10": iters(21_000, 1e-3, [11_000, 16_000]), "cifar100": iters(32_000, 1e-3, [16_000, 24_000])}
AUGMENT = {"cifar10": "crop_flip", "cifar100": "none"}   # CIFAR-100: "no augmentation" (Sec. 4.1)

# CUB-200 (Table 5): nothing is stated; all assumed (epochs, lr 0.1 from scratch / 0.01 fine-tuning).
CUB_TRAIN = Phase(100, "epoch", sgd(0.1, [50, 75]))
CUB_FINETUNE = Phase(100, "epoch", sgd(0.01, [50, 75]))
CUB_STAGE1 = Phase(30, "epoch", sgd(1e-3, [15, 25]))
RESNET34_IMAGENET = Pretrained(
    model="resnet34", path="data/pretrained/resnet34-b627a593.pth", sha256="b627a593", num_classes=1000,
    source="torchvision ResNet34_Weights.IMAGENET1K_V1 (download.pytorch.org/models/resnet34-b627a593.pth)")

PROTOCOL_NOTES = [
    "paper (CIFAR-10): 4-pixel padding + random 32x32 crops; SGD, momentum 0.9, weight decay 1e-4. Teacher: "
    "lr 0.1 / 0.01 / 0.001 at 32k / 48k, 64k iterations. FSP stage 1: lr 1e-3 / 1e-4 / 1e-5 until 11k / 16k / "
    "21k iterations; stage 2 (and Teacher∗): lr 0.1 / 0.01 / 0.001 until 11k / 16k / 21k.",
    "paper (CIFAR-100): no augmentation; FSP stage 1 lr 1e-3 / 1e-4 / 1e-5 until 16k / 24k / 32k; teachers 64k "
    "iterations; Table 4 trains ResNet-32 and ResNet-14 for 64k iterations.",
    "assumed: batch size 128 (not stated); CIFAR-10 crops add horizontal flips (the suite's crop_flip; the paper "
    "names padding and cropping only); stage 1 uses the same SGD momentum and weight decay as stage 2.",
    "assumed (Tables 3-4): stage 2 of the FSP and FitNet students uses the teacher's 64k-iteration schedule "
    "(\"single net, 64k iterations\"); their stage 1 is the fast-optimisation stage 1 of the same dataset.",
    "assumed (FitNet baselines): stage 1 is FitNets hint training with the FSP stage-1 length and schedule, stage "
    "2 trains on the labels only (FitNets' KD weight lambda = 0), as FSP's stage 2 does; '1 loss' = one hint "
    "at the middle section (stage2 <- stage2, FitNets' choice), '3 losses' = one hint per section. The paper's "
    "#Iter column (98k for 3 FitNets) suggests a 35k-iteration hint stage, which the paper does not explain.",
    "paper (Student∗ rows): stage 1 is trained once and the three networks' stage 2 start from it (#Iter 84k = "
    "21k + 3 x 21k in Table 1, 95k = 32k + 3 x 21k in Table 2); the paper explains the weak Student∗ ensemble "
    "by the members' FSP matrices being the same, which the shuffled-FSP dagger rows (one stage 1 per network) "
    "address. Changed: the suite first trained stage 1 in each Student∗ run, which made the members more "
    "diverse than the paper's and blurred that contrast; now one stage-1 run (the row's first seed, stage 2 "
    "skipped) feeds three stage-2 runs (seeds 10r..10r+2, stage 1 skipped, student initialised from it).",
    "assumed (Student-dagger): each member shuffles with its own fixed permutations (shuffle_seed = its seed).",
    "assumed (Teacher-double-dagger): the 21k extra iterations use the Teacher∗ schedule (lr 0.1 / 0.01 / 0.001 "
    "until 11k / 16k / 21k), starting from the net's own 64k-iteration weights (method finetune).",
    "assumed (every distilled row of Tables 1-2): the teacher is the Teacher net1 run (seed 0).",
    "read from the numbers (Table 3's teacher): its 91.91% is none of Table 1's ResNet-26 nets (Teacher 91.61 / "
    "91.56 / 92.09, Teacher‡ 91.84 / 92.26 / 92.01), so it is a fourth ResNet-26 with Table 1's protocol; it lies "
    "in their range, so it is the plain 16/32/64-channel ResNet-26 (which also gives the ResNet-8 student equal "
    "channel counts). Changed: the suite trains it as its own run (seed 3) instead of reusing Table 1's net1.",
    "read from the numbers (Table 4's networks): the teacher's 64.06% is exactly Table 2's Teacher net1, the "
    "32-layer ResNet with 4x channels trained without augmentation, and FSP needs equal channel counts, so the "
    "student is the 14-layer ResNet with 4x channels (cifar_resnet14x4: 32-channel stem, stages of 64/128/256). "
    "Changed: the suite first used the plain cifar_resnet32 -> cifar_resnet14; the teacher is now Table 2's "
    "Teacher net1 run itself.",
    "deviation (Table 5): the paper's student is a 'ResNet-20' whose layout is not given; FSP needs the "
    "student's section widths to equal ResNet-34's (64/128/256/512), so the suite uses ResNet-18 (timm "
    "resnet18, ImageNet layout, 4 sections of 2 basic blocks), the ImageNet-layout ResNet nearest to 20 layers.",
    "assumed (Table 5): 224x224 inputs with ImageNet augmentation (random resized crop + flip); batch 64; "
    "100 epochs, lr 0.1 from scratch and 0.01 when fine-tuning, x0.1 at epochs 50 and 75; FSP/FitNet stage 1: "
    "30 epochs, lr 1e-3, x0.1 at 15 and 25; the FSP and FitNet students learn from the fine-tuned ResNet-34.",
    "Cells report the last iteration's accuracy (no early stopping or best-epoch selection).",
]


# -- specs -----------------------------------------------------------------------------------------
def scratch(model: str, dataset: str, phase: Phase = FULL, seed: int = 0) -> ExperimentSpec:
    """A network trained on the labels only (the paper's Teacher / Teacher∗ / Student-original)."""
    return ExperimentSpec(model=model, method="scratch", dataset=dataset, augment=AUGMENT[dataset],
                          batch_size=BATCH, train=phase, seed=seed)


def fsp_student(model: str, teacher: ExperimentSpec, stage2: Phase, seed: int = 0,
                shuffle: bool = False) -> ExperimentSpec:
    args = {"shuffle": True, "shuffle_seed": seed} if shuffle else {}
    return ExperimentSpec(model=model, method="fsp", method_args=args, teachers=[teacher],
                          dataset=teacher.dataset, augment=teacher.augment, batch_size=BATCH,
                          train=stage2, stages={"fsp": STAGE1[teacher.dataset], "train": stage2}, seed=seed)


def fsp_stage1(model: str, teacher: ExperimentSpec, seed: int = 0) -> ExperimentSpec:
    """FSP's stage 1 alone (stage 2 skipped): a student that has learnt the teacher's FSP matrices, from
    which several stage-2 runs branch (`fsp_branch`)."""
    stage1 = STAGE1[teacher.dataset]
    return dataclasses.replace(fsp_student(model, teacher, stage1, seed), stages={"fsp": stage1, "train": SKIPPED})


def fsp_branch(stage1: ExperimentSpec, stage2: Phase, seed: int) -> ExperimentSpec:
    """FSP's stage 2 (labels only) from the student of the finished stage-1 run `stage1` (stage 1 skipped)."""
    return dataclasses.replace(stage1, init=stage1, train=stage2, stages={"fsp": SKIPPED, "train": stage2},
                               seed=seed)


def fitnet_student(model: str, teacher: ExperimentSpec, stage2: Phase, hints: int = 1,
                   seed: int = 0) -> ExperimentSpec:
    """FitNets hint training (1 hint in the middle, or one per section), then labels only (lambda = 0)."""
    points = "middle" if hints == 1 else [f"stage{i}" for i in range(1, hints + 1)]
    args = {"hint_point": points, "guided_point": points, "lambda_start": 0.0, "lambda_end": 0.0}
    return ExperimentSpec(model=model, method="fitnets", method_args=args, teachers=[teacher],
                          dataset=teacher.dataset, augment=teacher.augment, batch_size=BATCH,
                          train=stage2, stages={"hint": STAGE1[teacher.dataset], "kd": stage2}, seed=seed)


def continued(teacher: ExperimentSpec, seed: int, phase: Phase = THIRD) -> ExperimentSpec:
    """Teacher-double-dagger: `phase` more iterations starting from the trained `teacher`'s weights."""
    return ExperimentSpec(model=teacher.model, method="finetune", teachers=[teacher], dataset=teacher.dataset,
                          augment=teacher.augment, batch_size=BATCH, train=phase, seed=seed)


def ensemble(members: list[ExperimentSpec]) -> ExperimentSpec:
    """Label ensemble (softmax average) of trained members; nothing is trained."""
    m = members[0]
    return ExperimentSpec(model=m.model, method="ensemble", teachers=list(members), dataset=m.dataset,
                          augment=m.augment, batch_size=m.batch_size, train=m.train, seed=0)


# -- tables ----------------------------------------------------------------------------------------
COLUMNS = ["net1", "net2", "net3", "avg", "ensemble of 3"]


def three_nets(row: str, make, first_seed: int) -> list[Cell]:
    """A row of Tables 1-2: networks k = 0, 1, 2 built by `make(k, seed)` with seeds first_seed + k, their
    mean and their ensemble."""
    nets = [make(k, first_seed + k) for k in range(N_NETS)]
    cells = [Cell(row, f"net{k + 1}", [nets[k]]) for k in range(N_NETS)]
    cells.append(Cell(row, "avg", nets, note="mean over net1..net3"))
    cells.append(Cell(row, "ensemble of 3", [ensemble(nets)]))
    return cells


def teacher(model: str, dataset: str) -> ExperimentSpec:
    """The teacher every distilled row of a dataset learns from: net1 (seed 0) of the Teacher row."""
    return scratch(model, dataset, FULL, seed=0)


def fast_optimisation(key: str, dataset: str, model: str, title: str, iterations: dict[str, str],
                      full: bool) -> Table:
    """Row r's networks use seeds 10r, 10r+1, 10r+2, so no network shares another's initialisation or data
    order (a same-architecture student with its teacher's seed would start from the teacher's init)."""
    def teacher_net(k: int) -> ExperimentSpec:
        return scratch(model, dataset, FULL, seed=k)

    t = teacher_net(0)
    rows = [("Teacher", lambda k, s: teacher_net(k)),
            ("Teacher∗", lambda k, s: scratch(model, dataset, THIRD, s))]
    if full:
        rows.append(("Teacher‡", lambda k, s: continued(teacher_net(k), seed=s)))
        rows.append(("1 loss FitNet∗", lambda k, s: fitnet_student(model, t, THIRD, hints=1, seed=s)))
        rows.append(("3 loss FitNet∗", lambda k, s: fitnet_student(model, t, THIRD, hints=3, seed=s)))
    else:
        rows.append(("FitNet∗", lambda k, s: fitnet_student(model, t, THIRD, hints=1, seed=s)))
    # one stage-1 run (the row's first seed, s - k) for the three networks' stage 2
    rows.append(("Student∗", lambda k, s: fsp_branch(fsp_stage1(model, t, seed=s - k), THIRD, seed=s)))
    if full:
        rows.append(("Student∗†", lambda k, s: fsp_student(model, t, THIRD, seed=s, shuffle=True)))
    cells = [c for r, (row, make) in enumerate(rows) for c in three_nets(row, make, first_seed=10 * r)]
    notes = ["Rows: ∗ = one third of the 64k iterations (21k); ‡ = 21k more iterations from the 64k-iteration "
             "Teacher; † = stage 1 against a randomly shuffled FSP matrix.",
             "Student∗: one stage-1 run (seed of net1), from whose student net1-net3 each train their stage 2; "
             "Student∗†: each network runs its own (shuffled) stage 1, as in the paper.",
             "Columns net1-net3 of the r-th row (from 0) are seeds 10r, 10r+1, 10r+2 (Teacher: 0-2); Teacher‡ "
             "net k continues Teacher net k; every distilled row learns from Teacher net1.",
             "The paper's #Iter column (iterations to obtain the three networks): "
             + ", ".join(f"{r} {n}" for r, n in iterations.items()) + "."]
    return Table(key, title, cells, cols=COLUMNS, paper_metric="top1_acc", notes=notes)


def table1() -> Table:
    return fast_optimisation(
        "table1", "cifar10", "cifar_resnet26",
        "Table 1: fast optimisation, CIFAR-10, ResNet-26 teacher and students", full=True,
        iterations={"Teacher": "192k", "Teacher∗": "63k", "Teacher‡": "63k", "1 loss FitNet∗": "98k",
                    "3 loss FitNet∗": "98k", "Student∗": "84k", "Student∗†": "126k"})


def table2() -> Table:
    return fast_optimisation(
        "table2", "cifar100", "cifar_resnet32x4",
        "Table 2: fast optimisation, CIFAR-100 (no augmentation), ResNet-32 with 4x channels", full=False,
        iterations={"Teacher": "192k", "Teacher∗": "63k", "FitNet∗": "98k", "Student∗": "95k"})


def minimisation(key: str, t: ExperimentSpec, small: str, title: str, names: tuple[str, str],
                 notes: list[str]) -> Table:
    rows = [(f"Teacher-original ({names[0]})", t),
            (f"Student-original ({names[1]})", scratch(small, t.dataset, FULL)),
            ("FitNet", fitnet_student(small, t, FULL)),
            ("Proposed method (FSP)", fsp_student(small, t, FULL))]
    cells = [Cell(row, "single net", [spec]) for row, spec in rows]
    return Table(key, title, cells, paper_metric="top1_acc", notes=notes)


TABLE3_TEACHER_SEED = 3   # a fourth ResNet-26: Table 1's Teacher nets are seeds 0-2


def table3() -> Table:
    t = scratch("cifar_resnet26", "cifar10", FULL, seed=TABLE3_TEACHER_SEED)
    return minimisation("table3", t, "cifar_resnet8", "Table 3: network minimisation, CIFAR-10, ResNet-26 -> "
                        "ResNet-8", ("ResNet-26", "ResNet-8"),
                        ["The teacher is its own ResNet-26 run (seed 3), trained like Table 1's Teacher nets: its "
                         "published 91.91% is none of theirs."])


def table4() -> Table:
    return minimisation("table4", teacher("cifar_resnet32x4", "cifar100"), "cifar_resnet14x4",
                        "Table 4: network minimisation, CIFAR-100 (no augmentation), ResNet-32 -> ResNet-14, "
                        "both with 4x channels", ("ResNet-32", "ResNet-14"),
                        ["The teacher is Table 2's Teacher net1 run (the paper prints 64.06 for both); the "
                         "student is the 14-layer ResNet with the same 4x channels (FSP needs equal widths)."])


def cub(model: str, method: str = "scratch", teachers=(), phase: Phase = CUB_TRAIN, **extra) -> ExperimentSpec:
    return ExperimentSpec(model=model, method=method, teachers=list(teachers), dataset="cub200",
                          augment="imagenet", batch_size=CUB_BATCH, train=phase, **extra)


def table5() -> Table:
    finetuned = cub("resnet34", "finetune", [RESNET34_IMAGENET], CUB_FINETUNE)
    fitnet = cub("resnet18", "fitnets", [finetuned], CUB_TRAIN, stages={"hint": CUB_STAGE1, "kd": CUB_TRAIN},
                 method_args={"lambda_start": 0.0, "lambda_end": 0.0})
    fsp = cub("resnet18", "fsp", [finetuned], CUB_TRAIN, stages={"fsp": CUB_STAGE1, "train": CUB_TRAIN})
    rows = [("Teacher (ResNet-34), fine-tuned from ImageNet", finetuned),
            ("Teacher (ResNet-34), from scratch", cub("resnet34")),
            ("Student (ResNet-18), from scratch", cub("resnet18")),
            ("FitNet (ResNet-18)", fitnet),
            ("Proposed method (FSP, ResNet-18)", fsp)]
    cells = [Cell(row, "single net", [spec]) for row, spec in rows]
    return Table("table5", "Table 5: transfer learning, CUB-200-2011, ImageNet ResNet-34 teacher", cells,
                 paper_metric="top1_acc",
                 notes=["The paper's student is a ResNet-20 (layout not given); ours is ResNet-18, see Protocol."])


# -- plot --------------------------------------------------------------------------------------------
def iteration_curve(metrics: list[dict]) -> tuple[list[float], list[float]]:
    """(iterations used so far, test accuracy %) per epoch row of a run's curve, stages chained."""
    xs, ys, offset, stage, last = [], [], 0.0, None, 0.0
    for r in metrics:
        if not isinstance(r.get("stage_iteration"), float) or not isinstance(r.get("top1_err"), float):
            continue
        if r["stage"] != stage:
            offset, stage = offset + last, r["stage"]
        last = r["stage_iteration"]
        xs.append(offset + last)
        ys.append(100.0 - r["top1_err"])
    return xs, ys


def run_history(rows: list[dict], curves: dict[str, list[dict]], run_id: str) -> list[dict]:
    """A run's per-epoch rows, after those of the run its student started from (a Student∗ network's
    shared stage 1: the `init` column of its runs.csv row), so its curve counts every iteration that
    went into it."""
    init = next((r.get("init", "") for r in rows if r["run_id"] == run_id), "")
    before = run_history(rows, curves, init) if init else []
    return before + read_metrics(curves, run_id)


def draw_accuracy_vs_iteration(paper, rows, budget, curves, path):
    """Test accuracy against iterations of each row's net1 run, Tables 1 and 2 side by side."""
    from matplotlib.figure import Figure


    tables = [t for t in paper.tables if t.key in ("table1", "table2")]
    fig = Figure(figsize=(6.0 * len(tables), 4.6))
    used = []
    for i, table in enumerate(tables):
        ax = fig.add_subplot(1, len(tables), i + 1)
        for cell in (c for c in table.cells if c.col == "net1"):
            found = cell_runs(rows, table.key, cell, budget)
            xs, ys = iteration_curve(run_history(rows, curves, found[0]["run_id"])) if found else ([], [])
            if xs:
                ax.plot(xs, ys, marker="o", markersize=2, linewidth=1, label=cell.row)
                used.append(found[0])
        if ax.lines:
            ax.set_xlabel("optimiser iterations (all stages)")
            ax.set_ylabel("test accuracy (%)")
            ax.legend(fontsize=7)
            ax.grid(alpha=0.3)
        else:
            ax.text(0.5, 0.5, f"no finished runs yet\nrun `make reproduce-{paper.key}`", ha="center",
                    va="center", transform=ax.transAxes, color="0.4")
        ax.set_title(table.title.replace(", ", ",\n", 1), fontsize=8)
    fig.suptitle(figure_title("FSP: test accuracy against iterations (net1 of each row; FSP and FitNet "
                              "students start with stage 1)", budget, used), fontsize=9, y=1.0)
    fig.subplots_adjust(top=0.8, wspace=0.25)
    save(fig, path)


def paper() -> Paper:
    return Paper(
        key=KEY,
        title="FSP: A Gift from Knowledge Distillation (Yim et al., CVPR 2017)",
        citation="Yim, Joo, Bae & Kim, 'A Gift from Knowledge Distillation: Fast Optimization, Network "
                 "Minimization and Transfer Learning', CVPR 2017",
        tables=[table1(), table2(), table3(), table4(), table5()],
        plots=[Plot("accuracy_vs_iteration", "Test accuracy against iterations (Tables 1-2)",
                    draw_accuracy_vs_iteration)],
        protocol_notes=PROTOCOL_NOTES,
    )
