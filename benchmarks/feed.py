"""FEED: Park & Kwak, "FEED: Feature-level Ensemble for Knowledge Distillation" (arXiv 1909.10754; ECAI 2020).

FEED transfers the knowledge of several same-architecture teachers at the final feature map: one
non-linear transformation layer (NTL) per teacher maps the student's final map onto that teacher's,
and the student minimises CE + beta * sum_n ||x_n^T/||x_n^T|| - NTL_n(x^S)/||NTL_n(x^S)|| ||_1
(method `feed`). pFEED trains with N teachers at once; sFEED chains generations, the trained student
becoming the next teacher.

What is declared here, and how cells map to runs:

- Shared teachers: `scratch(model, seed)` for seeds 0..4 are the five CIFAR-100 scratch models of each
  architecture. They are the teachers of every multi-teacher cell of Table 2, seed 0 is the single
  teacher of Table 1 and the patriarch (Stack-0) of Table 4, and all five form the "Scratch" cells of
  Tables 1, 2 and 4 (mean of 5). Identical specs hash to identical run ids, so each is trained once.
- Students use seeds 5, 6, ... (`STUDENT_SEED`) so that no student starts from its teacher's
  initialisation or sees its teacher's data order.
- Table 1 (`table1`): one teacher (scratch seed 0); columns Scratch, AT, L1, FEED; rows the four models.
- Table 2 (`table2`): five teachers (scratch seeds 0..4); columns Scratch (x5), KD (from the 5-model
  ensemble's averaged soft labels), 5xL1, 5xAT, 5xFT (one term per teacher), Ens (the label ensemble of
  the 5 scratch models: the evaluation-only `ensemble` method) and pFEED (one NTL per teacher).
- Table 4 (`table4`): for each of Table 2's four models, sFEED, FT, KD and BAN over Stack-1..Stack-5
  (`generations()`): stack m's single teacher is stack m-1's final model and stack 0 is scratch seed 0.
  Rows are (model, method); the Scratch column shows the five scratch models beside the error published
  in the model's own paper (the paper's Scratch column repeats those). sFEED's Stack-1 is the same run as
  Table 1's first FEED student of that model.
- Tables 3 and 5 (`table3`, `table5`): ResNet-34 on ImageNet (top-1 / top-5 error). Table 3: five
  ResNet-34s trained from scratch by the suite (the Scratch cell), the first three of which teach pFEED;
  Table 5: sFEED Stack-1..Stack-5 whose patriarch is torchvision's pretrained ResNet-34. They need
  data/imagenet and are reported "not run" without it.
- Figures 4 and 5 (`fig4`, `fig5` probe tables and plots): the paraphraser of Factor Transfer is trained
  to reconstruct a trained model's final feature map; its reconstruction loss per epoch, read from the
  probe run's "paraphraser" stage rows of its per-epoch metrics, is the curve. A probe is an `ft` run whose
  teacher is the probed model (Figure 4: the sFEED stacks; Figure 5: scratch, KD and pFEED students).

FEED's numbers, beta and training settings were not available: every FEED reference value is empty
("paper value not transcribed"; Table 4's Scratch column carries the models' own papers' errors where
they could be read) and every protocol value is an assumption listed in `PROTOCOL_NOTES`.
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
N_STACKS = 5            # Tables 4 and 5: Stack-1..Stack-5 (paper)
FIGURE_MODEL = "ResNet-56"  # Figures 4-5 probe this model's runs (assumed)
N_IMAGENET_SCRATCH = 5      # Table 3 reports five scratch models (paper)
N_IMAGENET_TEACHERS = 3     # ... of which the first three teach pFEED (paper)

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
    "an assumption unless marked otherwise, and every FEED value is 'not transcribed' (Table 4's Scratch "
    "references come from the models' own papers).",
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
    f"paper: Table 4 runs sFEED, FT, KD and BAN on small- and large-capacity networks (its text compares "
    f"ResNet-56, ResNet-110 and ResNeXt-29), so the suite runs Stack-1..Stack-{N_STACKS} for all four models of "
    "Table 2. Changed: the suite first ran ResNet-56 only (an assumption), which could not show the paper's "
    "central contrast (label-based methods better on small networks, feature-based ones on large).",
    "assumed (Table 4): one chain of generations per (model, method): stack m learns from stack m-1 and trains "
    f"with seed {STUDENT_SEED}+m-1, so sFEED's Stack-1 is Table 1's first FEED student of the model; KD stacks "
    "use the kd method's defaults (T = 4, weight 1), BAN stacks T = 1. The paper: 'in BAN, BAN-N is the same "
    "setting as Stack-(N-1)', i.e. the BAN row is counted in stacks like the others (BAN's own numbering is "
    "shifted by one); the BAN runs are this suite's born-again generations of the same chain.",
    "paper (Table 4's Scratch column): it repeats the scores reported in each model's original paper; the "
    "report shows those as the column's reference where they could be read (WRN-28-10: the WRN authors; "
    "ResNeXt-29 16x64d: the ResNeXt paper's Table 7) beside the suite's five scratch models; the ResNet paper "
    "reports CIFAR-10 only, so the ResNet-56/110 values are not transcribed (see the references' notes).",
    f"assumed: Figures 4-5 probe {FIGURE_MODEL}: an ft paraphraser (k = 0.5) is trained for "
    f"{PROBE_PARAPHRASER.length:g} epochs on the probed model's final feature map and its per-epoch L1 "
    "reconstruction loss is plotted; Figure 4 probes sFEED Stack-0..Stack-5, Figure 5 the first scratch, KD "
    "and pFEED models of Table 2. The ft method always ends with a student stage, here cut to one iteration "
    "(its student is not used).",
    "assumed (ImageNet, Tables 3 and 5): torchvision's ResNet-34 recipe: SGD lr 0.1, momentum 0.9, weight "
    "decay 1e-4, batch 256, 90 epochs, lr x0.1 every 30 epochs; standard random-resized-crop + flip.",
    f"paper (Table 3): 'although we report the scores of five scratch models, only the first three teacher "
    f"networks were used to train the students': the Scratch cell is {N_IMAGENET_SCRATCH} ResNet-34s trained "
    f"from scratch by the suite with the recipe above (seeds 0..{N_IMAGENET_SCRATCH - 1}) and pFEED learns from "
    f"the first {N_IMAGENET_TEACHERS} (seeds 0..{N_IMAGENET_TEACHERS - 1}). Changed: the suite first reported 2 "
    "scratch models and mixed torchvision's pretrained ResNet-34 into pFEED's teachers.",
    f"paper (Table 5): sFEED Stack-1..Stack-{N_STACKS} ('sFEED with Stack-5 performs better than pFEED'; 'pFEED "
    "trained by only three teachers in Table 3 is close to sFEED at Stack-3'), and 'for the base model we simply "
    "use the pretrained model PyTorch provides': Stack-0 is torchvision's ResNet-34 "
    "(data/pretrained/resnet34-b627a593.pth, sha256 prefix b627a593; torchvision reports 26.69% top-1 / 8.58% "
    "top-5 error for it). Changed: the suite first showed 2 stacks (an assumption).",
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


def imagenet_scratch(n: int = N_IMAGENET_SCRATCH) -> list[ExperimentSpec]:
    """Table 3's scratch ResNet-34s (seeds 0..n-1)."""
    return [imagenet("scratch", seed=s) for s in range(n)]


def imagenet_teachers() -> list[ExperimentSpec]:
    """Table 3's teachers: the first three of its five scratch models."""
    return imagenet_scratch()[:N_IMAGENET_TEACHERS]


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


def table4_row(name: str, method_row: str) -> str:
    return f"{name}, {method_row}"


def table4() -> Table:
    cells = []
    for name, model in CIFAR_MODELS.items():
        for row, method in TABLE4_METHODS.items():
            label = table4_row(name, row)
            cells.append(Cell(label, "Scratch", scratch_teachers(model),
                              note="the 5 scratch models; reference: the model's own paper"))
            chain = stacks(model, method)
            cells += [Cell(label, f"Stack-{m}", [chain[m]]) for m in range(1, N_STACKS + 1)]
    return Table("table4", "Table 4: CIFAR-100, generations (Stack-m learns from Stack-m-1; Stack-0 is a scratch "
                           "model): sFEED vs FT, KD, BAN on the four models", cells,
                 notes=["Stack-0 is the scratch model of seed 0 (its error is plotted with the stacks).",
                        "Scratch: ours is the mean of the 5 scratch models (Table 2's); the reference is the error "
                        "published in the model's own paper, which the paper's Scratch column repeats."])


def table3() -> Table:
    pfeed = [imagenet("feed", imagenet_teachers(), seed=STUDENT_SEED)]
    cells = [Cell(row, col, specs, metric=metric) for row, metric in ERROR_ROWS.items()
             for col, specs in (("Scratch", imagenet_scratch()), ("pFEED", pfeed))]
    return Table("table3", "Table 3: ImageNet, ResNet-34, pFEED with three ResNet-34 teachers", cells,
                 notes=[f"Scratch: {N_IMAGENET_SCRATCH} ResNet-34s trained from scratch; pFEED learns from the "
                        f"first {N_IMAGENET_TEACHERS} (as the paper)."])


def imagenet_stacks(n: int = N_STACKS) -> list[ExperimentSpec]:
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
    chain = stacks(CIFAR_MODELS[FIGURE_MODEL], "feed")
    cells = [Cell("sFEED", f"Stack-{m}", [probe(spec)], metric=PROBE_METRIC) for m, spec in enumerate(chain)]
    return Table("fig4", f"Figure 4 probes: FT paraphraser reconstruction loss on the sFEED stacks of "
                         f"{FIGURE_MODEL} (final epoch; curves in fig4.png)", cells, paper_metric="loss_rec",
                 notes=["Probe runs: an ft run whose teacher is the probed model; only its paraphraser stage "
                        "matters. The paper shows curves only (no numbers)."])


def fig5_table() -> Table:
    model = CIFAR_MODELS[FIGURE_MODEL]
    teachers = scratch_teachers(model)
    targets = {"Scratch": teachers[0], "KD": student(model, "kd", teachers, STUDENT_SEED),
               "pFEED": student(model, "feed", teachers, STUDENT_SEED)}
    cells = [Cell(FIGURE_MODEL, col, [probe(targets[col])], metric=PROBE_METRIC) for col in FIG5_TARGETS]
    return Table("fig5", f"Figure 5 probes: FT paraphraser reconstruction loss on {FIGURE_MODEL} trained from "
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
            Plot("table4_stacks", "Table 4: top-1 error per stack, one panel per model",
                 feed_plots.draw_stacks("table4")),
            Plot("table2_curves", "Table 2: test error per epoch (first run of each cell)",
                 feed_plots.draw_training_curves("table2")),
        ],
        protocol_notes=list(PROTOCOL_NOTES),
    )


__all__ = ["paper", "cifar", "scratch", "scratch_teachers", "student", "student_runs", "stacks", "probe",
           "imagenet", "imagenet_scratch", "imagenet_teachers", "imagenet_stacks", "CIFAR_MODELS", "KEY"]

