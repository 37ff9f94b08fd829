"""FEED: Park & Kwak, "FEED: Feature-level Ensemble for Knowledge Distillation" (arXiv 1909.10754; ECAI 2020).

FEED transfers the knowledge of several same-architecture teachers at the final feature map: one
non-linear transformation layer (NTL) per teacher maps the student's final map onto that teacher's,
and the student minimises CE + beta * sum_n ||x_n^T/||x_n^T|| - NTL_n(x^S)/||NTL_n(x^S)|| ||_1
(method `feed`). pFEED trains with N teachers at once; sFEED chains generations, the trained student
becoming the next teacher.

What is declared here, and how cells map to runs:

- Shared teachers: `scratch(model, seed)` for seeds 0..4 are the five CIFAR-100 scratch models of each
  architecture. They are the teachers of every multi-teacher cell of Table 2, seed 0 is the single
  teacher of Table 1 and the patriarch (Stack-0) of Table 4, and all five form Table 2's "Scratch" cell
  (mean of 5). Identical specs hash to identical run ids, so each is trained once.
- Students use seeds 5, 6, ... (`STUDENT_SEED`) so that no student starts from its teacher's
  initialisation or sees its teacher's data order.
- Table 1 (`table1`): one teacher (scratch seed 0); columns Scratch, AT, L1, FEED; rows the four models.
- Table 2 (`table2`): five teachers (scratch seeds 0..4); columns Scratch (x5), KD (from the 5-model
  ensemble's averaged soft labels), 5xL1, 5xAT, 5xFT (one term per teacher), Ens (the label ensemble of
  the 5 scratch models: the evaluation-only `ensemble` method) and pFEED (one NTL per teacher).
- Table 4 (`table4`): sFEED, FT, KD and BAN over Stack-1..Stack-5 (`generations()`): stack m's single
  teacher is stack m-1's final model and stack 0 is scratch seed 0. sFEED's Stack-1 is the same run as
  Table 1's first FEED student.
- Tables 3 and 5 (`table3`, `table5`): ResNet-34 on ImageNet (top-1 / top-5 error). Table 3: pFEED with
  three teachers (torchvision's pretrained ResNet-34 and two ResNet-34s trained by the suite); Table 5:
  sFEED stacks whose patriarch is torchvision's pretrained ResNet-34. They need data/imagenet and are
  reported "not run" without it.
- Figures 4 and 5 (`fig4`, `fig5` probe tables and plots): the paraphraser of Factor Transfer is trained
  to reconstruct a trained model's final feature map; its reconstruction loss per epoch, read from the
  probe run's "paraphraser" stage rows of its per-epoch metrics, is the curve. A probe is an `ft` run whose
  teacher is the probed model (Figure 4: the sFEED stacks; Figure 5: scratch, KD and pFEED students).

FEED's numbers, beta and training settings were not available: every reference value is empty
("paper value not transcribed") and every protocol value is an assumption listed in `PROTOCOL_NOTES`.
"""
from __future__ import annotations

from kd_methods.runs.spec import ExperimentSpec, Optim, Phase, Pretrained

from . import feed_plots
from .core import Cell, Paper, Plot, Table, generations

KEY = "feed"

# Display name -> timm model name (FEED's CIFAR-100 models).
CIFAR_MODELS = {
    "ResNet-56": "cifar_resnet56",
    "ResNet-110": "cifar_resnet110",
    "WRN-28-10": "cifar_wrn_28_10",
    "ResNeXt-29 16x64d": "cifar_resnext29_16x64d",
}
N_TEACHERS = 5          # Table 2: five scratch models (paper)
N_RUNS = 5              # runs per student cell (paper for pFEED; assumed for the others)
STUDENT_SEED = 5        # students' seeds are 5, 6, ...; teachers use 0..4
N_STACKS = 5            # Table 4: Stack-1..Stack-5 (paper)
SFEED_MODEL = "ResNet-56"   # Table 4 / Figures 4-5 model (assumed)
N_IMAGENET_TEACHERS = 3     # Table 3 (paper)
N_IMAGENET_STACKS = 2       # Table 5 (assumed)

# CIFAR-100 protocol (assumed; optimiser, batch and weight decay as in the released Factor Transfer code
# of the same lab, schedule the common 200-epoch CIFAR-100 one).
CIFAR_PROTOCOL = Phase(200, "epoch", Optim("sgd", lr=0.1, momentum=0.9, weight_decay=5e-4,
                                           schedule="multistep", milestones=[100, 150], gamma=0.1))
CIFAR_BATCH = 128
# Factor Transfer's paraphraser stage: the released train_Paraphraser.py trains 5 epochs at lr 0.1
# (its decay epochs 150/225 are never reached).
PARAPHRASER = Phase(5, "epoch", Optim("sgd", lr=0.1, momentum=0.9, weight_decay=5e-4, schedule="constant"))
# Figures 4-5 probes: a longer paraphraser run so the reconstruction curve flattens (assumed), and a
# one-iteration "train" stage because the ft method always has one (its student is not used).
PROBE_PARAPHRASER = Phase(30, "epoch", Optim("sgd", lr=0.1, momentum=0.9, weight_decay=5e-4,
                                             schedule="constant"))
PROBE_STUDENT = Phase(1, "iter", Optim("sgd", lr=0.1, momentum=0.9, weight_decay=5e-4, schedule="constant"))
PROBE_METRIC = "paraphraser_loss_rec"

# ImageNet protocol (assumed: torchvision's reference ResNet recipe).
IMAGENET_PROTOCOL = Phase(90, "epoch", Optim("sgd", lr=0.1, momentum=0.9, weight_decay=1e-4,
                                             schedule="step", step_size=30, gamma=0.1))
IMAGENET_BATCH = 256
TORCHVISION_RESNET34 = Pretrained(
    model="resnet34", path="data/pretrained/resnet34-b627a593.pth", sha256="b627a593", num_classes=1000,
    source="torchvision ResNet34_Weights.IMAGENET1K_V1, https://download.pytorch.org/models/resnet34-b627a593.pth")

ERROR_ROWS = {"top-1 error": "top1_err", "top-5 error": "top5_err"}

PROTOCOL_NOTES = [
    "FEED's training settings, beta and numbers were not available to this suite: every value below is "
    "an assumption unless marked otherwise, and every paper value is 'not transcribed'.",
    "assumed (CIFAR-100): SGD, lr 0.1, momentum 0.9 (no Nesterov), weight decay 5e-4, batch 128, 200 epochs, "
    "lr x0.1 at epochs 100 and 150, 4-pixel-pad random crop + horizontal flip. The optimiser, batch, weight "
    "decay and augmentation are those of the released Factor Transfer code (Jangho-Kim/Factor-Transfer-pytorch, "
    "train_teacher.py / train_student.py, same lab); its CIFAR-10 schedule (163 epochs, decay at 82/123) is "
    "replaced by the common 200-epoch CIFAR-100 one.",
    "assumed: FEED's beta = 500 (the Factor Transfer code's value for the same mean-reduced normalised L1); "
    "see the method provenance below.",
    "code (Factor Transfer, train_Paraphraser.py): the FT paraphraser trains 5 epochs at lr 0.1 (SGD, momentum "
    "0.9, weight decay 5e-4, L1 reconstruction), paraphrase rate k = 0.5; used for the 5xFT and FT cells.",
    f"assumed: {N_RUNS} runs (seeds {STUDENT_SEED}..{STUDENT_SEED + N_RUNS - 1}) for every student cell of "
    "Tables 1-2 (the paper states 5 runs for pFEED); the Scratch cells are the 5 scratch teachers (seeds 0..4); "
    "students never share a seed with a teacher.",
    "assumed: Table 1's single teacher is the scratch model of seed 0 (one of Table 2's five teachers).",
    f"assumed: Table 4 uses {SFEED_MODEL} with one chain of generations; stack m trains with seed "
    f"{STUDENT_SEED}+m-1, so sFEED's Stack-1 is Table 1's first FEED student. KD stacks use the kd method's "
    "defaults (T = 4, weight 1); BAN stacks use T = 1.",
    f"assumed: Figures 4-5 probe {SFEED_MODEL}: an ft paraphraser (k = 0.5) is trained for "
    f"{PROBE_PARAPHRASER.length:g} epochs on the probed model's final feature map and its per-epoch L1 "
    "reconstruction loss is plotted; Figure 4 probes sFEED Stack-0..Stack-5, Figure 5 the first scratch, KD "
    "and pFEED models of Table 2. The ft method always ends with a student stage, here cut to one iteration "
    "(its student is not used).",
    "assumed (ImageNet, Tables 3 and 5): torchvision's ResNet-34 recipe: SGD lr 0.1, momentum 0.9, weight "
    "decay 1e-4, batch 256, 90 epochs, lr x0.1 every 30 epochs; standard random-resized-crop + flip.",
    "Table 3's three teachers: torchvision's pretrained ResNet-34 (data/pretrained/resnet34-b627a593.pth, "
    "sha256 prefix b627a593; torchvision reports 26.69% top-1 / 8.58% top-5 error for it) and two ResNet-34s "
    "trained from scratch by the suite with the recipe above (seeds 0 and 1; their runs are the 'Scratch' "
    "cell). Other pretrained ResNet-34 weights (timm's) could replace them but have no recorded checksum here.",
    f"assumed: Table 5 shows {N_IMAGENET_STACKS} sFEED stacks; Stack-0 is torchvision's pretrained ResNet-34.",
    "assumed: the ImageNet students train from a fresh initialisation with the recipe above. The paper's "
    "ImageNet base models come from torchvision's pretrained weights; whether its students also started from "
    "them was not read (to do so, give `imagenet()` students init=TORCHVISION_RESNET34).",
]


# -- specs -----------------------------------------------------------------------------------------
def cifar(model: str, method: str = "scratch", teachers=(), seed: int = 0, method_args=None,
          stages=None) -> ExperimentSpec:
    """One CIFAR-100 training with the FEED protocol. Every FEED spec is built here, so equal trainings
    are equal specs (and share a run)."""
    return ExperimentSpec(model=model, method=method, method_args=dict(method_args or {}),
                          teachers=list(teachers), dataset="cifar100", batch_size=CIFAR_BATCH,
                          train=CIFAR_PROTOCOL, stages=dict(stages or {}), seed=seed)


def scratch(model: str, seed: int) -> ExperimentSpec:
    return cifar(model, "scratch", seed=seed)


def scratch_teachers(model: str, n: int = N_TEACHERS) -> list[ExperimentSpec]:
    """The five scratch models of an architecture (seeds 0..4): teachers of Tables 1, 2 and 4."""
    return [scratch(model, s) for s in range(n)]


def ft_stages() -> dict[str, Phase]:
    return {"paraphraser": PARAPHRASER, "train": CIFAR_PROTOCOL}


def student(model: str, method: str, teachers, seed: int) -> ExperimentSpec:
    """A distilled CIFAR-100 student; FT gets its paraphraser stage."""
    return cifar(model, method, teachers, seed, stages=ft_stages() if method == "ft" else None)


def student_runs(model: str, method: str, teachers, n: int = N_RUNS) -> list[ExperimentSpec]:
    return [student(model, method, teachers, STUDENT_SEED + i) for i in range(n)]


def stacks(model: str, method: str, n: int = N_STACKS) -> list[ExperimentSpec]:
    """[Stack-0 (scratch seed 0), Stack-1, ..., Stack-n]: stack m learns from stack m-1 with `method`."""
    return generations(scratch(model, 0),
                       lambda prev, m: student(model, method, [prev], STUDENT_SEED + m - 1), n)


def probe(target: ExperimentSpec) -> ExperimentSpec:
    """Figures 4-5: train FT's paraphraser on `target`'s final feature map (its loss curve is the figure)."""
    return cifar(target.model, "ft", [target], seed=0,
                 stages={"paraphraser": PROBE_PARAPHRASER, "train": PROBE_STUDENT})


def imagenet(method: str = "scratch", teachers=(), seed: int = 0) -> ExperimentSpec:
    return ExperimentSpec(model="resnet34", method=method, teachers=list(teachers), dataset="imagenet",
                          batch_size=IMAGENET_BATCH, train=IMAGENET_PROTOCOL, seed=seed)


def imagenet_teachers() -> list:
    """Table 3's teachers: torchvision's pretrained ResNet-34 and two trained by the suite (seeds 0, 1)."""
    return [TORCHVISION_RESNET34] + [imagenet("scratch", seed=s) for s in range(N_IMAGENET_TEACHERS - 1)]


# -- tables ----------------------------------------------------------------------------------------
def table1() -> Table:
    cells = []
    for name, model in CIFAR_MODELS.items():
        teacher = [scratch(model, 0)]
        cells.append(Cell(name, "Scratch", scratch_teachers(model)))
        for col, method in (("AT", "at"), ("L1", "l1"), ("FEED", "feed")):
            cells.append(Cell(name, col, student_runs(model, method, teacher)))
    return Table("table1", "Table 1: CIFAR-100, one teacher of the student's architecture: FEED vs AT vs L1",
                 cells, notes=["Teacher: the scratch model of seed 0 (the first of Table 2's five)."])


def table2() -> Table:
    cells = []
    for name, model in CIFAR_MODELS.items():
        teachers = scratch_teachers(model)
        cells.append(Cell(name, "Scratch", teachers, note="mean of the 5 scratch teachers"))
        for col, method in (("KD", "kd"), ("5xL1", "l1"), ("5xAT", "at"), ("5xFT", "ft")):
            cells.append(Cell(name, col, student_runs(model, method, teachers)))
        cells.append(Cell(name, "Ens", [cifar(model, "ensemble", teachers)],
                          note="softmax average of the 5 scratch models"))
        cells.append(Cell(name, "pFEED", student_runs(model, "feed", teachers)))
    return Table("table2", "Table 2: CIFAR-100, five teachers (the scratch models): pFEED vs KD, L1, AT, FT "
                           "and the label ensemble", cells,
                 notes=["KD distils the averaged soft labels of the 5 teachers; 5xL1/5xAT/5xFT/pFEED add one "
                        "feature term per teacher; Ens evaluates the 5 teachers' softmax average."])


TABLE4_METHODS = {"sFEED": "feed", "FT": "ft", "KD": "kd", "BAN": "ban"}


def table4() -> Table:
    model = CIFAR_MODELS[SFEED_MODEL]
    cells = []
    for row, method in TABLE4_METHODS.items():
        chain = stacks(model, method)
        cells += [Cell(row, f"Stack-{m}", [chain[m]]) for m in range(1, N_STACKS + 1)]
    return Table("table4", f"Table 4: CIFAR-100, {SFEED_MODEL}, generations (Stack-m learns from Stack-m-1; "
                           "Stack-0 is a scratch model): sFEED vs FT, KD, BAN", cells,
                 notes=["Stack-0 is the scratch model of seed 0 (its error is plotted with the stacks)."])


def table3() -> Table:
    teachers = imagenet_teachers()
    base = [t for t in teachers if isinstance(t, ExperimentSpec)]
    pfeed = [imagenet("feed", teachers, seed=STUDENT_SEED)]
    cells = [Cell(row, col, specs, metric=metric) for row, metric in ERROR_ROWS.items()
             for col, specs in (("Scratch", base), ("pFEED", pfeed))]
    return Table("table3", "Table 3: ImageNet, ResNet-34, pFEED with three ResNet-34 teachers", cells,
                 notes=["Teachers: torchvision's pretrained ResNet-34 and the two 'Scratch' ResNet-34s."])


def imagenet_stacks(n: int = N_IMAGENET_STACKS) -> list[ExperimentSpec]:
    """[Stack-1, ..., Stack-n] of sFEED on ImageNet; Stack-0 is torchvision's pretrained ResNet-34."""
    first = imagenet("feed", [TORCHVISION_RESNET34], seed=STUDENT_SEED)
    return generations(first, lambda prev, m: imagenet("feed", [prev], seed=STUDENT_SEED + m), n - 1)


def table5() -> Table:
    chain = imagenet_stacks()
    cells = [Cell(row, f"Stack-{m + 1}", [spec], metric=metric) for row, metric in ERROR_ROWS.items()
             for m, spec in enumerate(chain)]
    return Table("table5", "Table 5: ImageNet, ResNet-34, sFEED from torchvision's pretrained weights", cells,
                 notes=["Stack-0 is torchvision's pretrained ResNet-34 (26.69% / 8.58% error as published by "
                        "torchvision)."])


FIG5_TARGETS = ("Scratch", "KD", "pFEED")


def fig4_table() -> Table:
    chain = stacks(CIFAR_MODELS[SFEED_MODEL], "feed")
    cells = [Cell("sFEED", f"Stack-{m}", [probe(spec)], metric=PROBE_METRIC) for m, spec in enumerate(chain)]
    return Table("fig4", f"Figure 4 probes: FT paraphraser reconstruction loss on the sFEED stacks of "
                         f"{SFEED_MODEL} (final epoch; curves in fig4.png)", cells, paper_metric="loss_rec",
                 notes=["Probe runs: an ft run whose teacher is the probed model; only its paraphraser stage "
                        "matters. The paper shows curves only (no numbers)."])


def fig5_table() -> Table:
    model = CIFAR_MODELS[SFEED_MODEL]
    teachers = scratch_teachers(model)
    targets = {"Scratch": teachers[0], "KD": student(model, "kd", teachers, STUDENT_SEED),
               "pFEED": student(model, "feed", teachers, STUDENT_SEED)}
    cells = [Cell(SFEED_MODEL, col, [probe(targets[col])], metric=PROBE_METRIC) for col in FIG5_TARGETS]
    return Table("fig5", f"Figure 5 probes: FT paraphraser reconstruction loss on {SFEED_MODEL} trained from "
                         "scratch, with KD and with pFEED (final epoch; curves in fig5.png)", cells,
                 paper_metric="loss_rec",
                 notes=["The probed models are the first runs of Table 2's Scratch, KD and pFEED cells."])


def paper() -> Paper:

    return Paper(
        key=KEY,
        title="FEED: Feature-level Ensemble for Knowledge Distillation",
        citation="SeongUk Park and Nojun Kwak, 'FEED: Feature-level Ensemble for Knowledge Distillation', "
                 "arXiv 1909.10754 (2019); ECAI 2020",
        tables=[table1(), table2(), table3(), table4(), table5(), fig4_table(), fig5_table()],
        plots=[
            Plot("fig4", "Figure 4: paraphraser reconstruction loss on the sFEED stacks",
                 feed_plots.draw_probe_curves("fig4")),
            Plot("fig5", "Figure 5: paraphraser reconstruction loss on scratch / KD / pFEED models",
                 feed_plots.draw_probe_curves("fig5")),
            Plot("table4_stacks", "Table 4: top-1 error per stack", feed_plots.draw_stacks("table4")),
            Plot("table2_curves", "Table 2: test error per epoch (first run of each cell)",
                 feed_plots.draw_training_curves("table2")),
        ],
        protocol_notes=list(PROTOCOL_NOTES),
    )


__all__ = ["paper", "cifar", "scratch", "scratch_teachers", "student", "student_runs", "stacks", "probe",
           "imagenet", "imagenet_teachers", "imagenet_stacks", "CIFAR_MODELS", "KEY"]

