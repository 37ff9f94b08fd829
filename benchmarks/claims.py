"""Each paper's headline claim, tested on real images at a scale a 2-core CPU finishes in about 90 minutes.

The five paper modules reproduce published tables, which needs CIFAR-100 and ImageNet and GPU-days. This
module asks a smaller, answerable question on the real datasets these machines have: does each method do
what its paper says it does, measured against the right baseline, with the noise between seeds accounted
for? Every claim is a `Comparison` between two cells of a table, paired by seed (the same seed gives both
arms the same initialisation draw and data order), and the report gives both arms' mean +- std, the paired
difference with its 95% interval and a verdict (holds / reversed / inconclusive; `kd_methods.report.compare`).

The regime (`PROTOCOL_NOTES`): Fashion-MNIST (MNIST for the claim about FitNets' MNIST networks), a fixed
class-balanced subset of the training images (the first `TRAIN_IMAGES` in class order; distillation's
effects are largest when labels are scarce, and it keeps the budget), the whole 10,000-image test set,
`EPOCHS` epochs of SGD with a cosine schedule (the teachers: all 60,000 images). Networks: the ResNet-26 teacher and ResNet-8 student of the
FSP paper's CIFAR-10 experiments (equal channels at every section, which FSP needs; the other
teacher-based methods use the same pair), ResNet-14 as the second architecture of a mixed DML cohort,
and FitNets' own MNIST maxout teacher and 6-layer FitNet.

The claims (one table each):

- `kd` (Hinton et al.): a ResNet-8 distilled from the trained ResNet-26 beats the ResNet-8 trained alone.
- `fitnets` (Romero et al., MNIST): the thin, deeper FitNet trained with hints then KD beats it with KD
  alone, and alone.
- `fsp` (Yim et al.): a ResNet-8 whose first stage matched the ResNet-26's FSP matrices reaches the
  scratch ResNet-8's final error in fewer iterations of its second stage, and ends with a lower error.
- `dml` (Zhang et al.): each network of a two-network cohort trained mutually beats the same network
  trained alone, for two ResNet-8s and for a ResNet-8 with a ResNet-14; and the two ResNet-8s updated in
  Algorithm 1's order against both updated from one forward pass (the evidence for the method's default).
- `feed` (Park & Kwak): pFEED from three scratch ResNet-8s beats the ResNet-8 alone and FEED from one of
  them; sFEED's Stack-2 beats Stack-1.
- `tolerant` (Yang et al.): the generation-1 student of a tolerant (TSD) patriarch beats that of a strict
  patriarch (plain cross-entropy); label smoothing and the confidence penalty, the paper's variants, too.
- `baselines` (FEED's baselines): AT, FT and L1 from the ResNet-26, each against the ResNet-8 alone.
"""
from __future__ import annotations

from kd_methods.runs.spec import ExperimentSpec, Optim, Phase

from .core import Cell, Comparison, Paper, Plot, Table
from .fitnets import MNIST_FITNET, MNIST_TEACHER, RMSPROP_MNIST
from .plots import figure_title, save

KEY = "claims"
DATASET, MNIST = "fashion_mnist", "mnist"
TRAIN_IMAGES = 8_000            # the students' fixed, class-balanced training subset
EPOCHS = 10
TEACHER_EPOCHS = 5              # the teachers learn from all 60,000 training images
BATCH = 128
SEEDS = 3                       # paired seeds 0..SEEDS-1 of every arm
MORE_SEEDS = 5                  # for the claims whose arms are cheap (one ResNet-8 beside a teacher)
SGD = Optim("sgd", lr=0.1, momentum=0.9, weight_decay=5e-4, schedule="cosine")
PROTOCOL = Phase(EPOCHS, "epoch", SGD)
TEACHER_PROTOCOL = Phase(TEACHER_EPOCHS, "epoch", SGD)
TEACHER, STUDENT, PEER = "cifar_resnet26", "cifar_resnet8", "cifar_resnet14"
NAMES = {TEACHER: "ResNet-26", STUDENT: "ResNet-8", PEER: "ResNet-14"}
GENERATION_SEED = 1000          # a generation trains with its parent's seed + 1000 (never its teacher's init)
FEED_TEACHER_SEEDS = (100, 101, 102)   # pFEED's three scratch ResNet-8 teachers (none is a student's seed)
# FSP's stage 1 (Sec. 4.1: lr 1e-3 for the FSP loss, then the usual lr for stage 2); FitNets' hint stage
FSP_STAGE = Phase(4, "epoch", Optim("sgd", lr=1e-3, momentum=0.9, weight_decay=5e-4, schedule="cosine"))
FT_PARAPHRASER = Phase(3, "epoch", Optim("sgd", lr=0.1, momentum=0.9, weight_decay=5e-4, schedule="constant"))
MNIST_PHASE = Phase(EPOCHS, "epoch", RMSPROP_MNIST)
# where a ResNet-8 fits its images: a quarter of them for four times the epochs (the same ~620 steps)
FIT_IMAGES, FIT_EPOCHS = TRAIN_IMAGES // 4, EPOCHS * 4
FIT_PROTOCOL = Phase(FIT_EPOCHS, "epoch", SGD)
MNIST_TEACHER_PHASE = Phase(TEACHER_EPOCHS, "epoch", RMSPROP_MNIST)
HINT_PHASE = Phase(EPOCHS // 2, "epoch", RMSPROP_MNIST)
TSD_K = 3                       # Fashion-MNIST's plausible confusions come in small groups (see the notes)

PROTOCOL_NOTES = [
    f"Data: Fashion-MNIST (Xiao et al. 2017); the students learn from the first {TRAIN_IMAGES:,} training images in "
    f"class-balanced order ({TRAIN_IMAGES // 10:,} per class; `train_subset`), no augmentation, pixels normalised by the train split's "
    "mean/std; scored on all 10,000 test images. The FitNets claim uses MNIST the same way (it is about the "
    "paper's MNIST networks).",
    f"Training: {EPOCHS} epochs, batch {BATCH}, SGD lr 0.1, momentum 0.9, weight decay 5e-4, cosine schedule to 0; "
    f"the MNIST maxout networks use FitNets Table 4's RMSProp (lr 5e-4, decay 0.9, constant). Every number is the "
    "last epoch's test error (no selection on the test set).",
    f"Teachers: the ResNet-26 (and MNIST's maxout teacher) train {TEACHER_EPOCHS} epochs on all 60,000 training "
    "images, the students on the subset: the teacher knows more than a student can learn from its images, the "
    "setting of Hinton et al.'s MNIST transfer-set experiments. A pilot that trained the ResNet-26 like the "
    "students (10,000 images, 12 epochs) gave it 11.7% error against the ResNet-8's 11.3-11.6%: nothing to distil.",
    f"Seeds: {MORE_SEEDS} per arm for the claims whose arms are one ResNet-8 beside the shared teacher (KD, FSP, "
    f"AT/FT/L1), {SEEDS} for the others (seeds 0..n-1); the arms of a claim are paired by seed. Students of a generation "
    f"(sFEED's Stack-2, the tolerant lineages' generation 1) train with their parent's seed + {GENERATION_SEED}, "
    f"and pFEED's teachers with seeds {FEED_TEACHER_SEEDS}, so no network starts from its teacher's "
    "initialisation. The teachers (ResNet-26, the maxout network) are one run each, shared by every student. "
    "`kd-bench reproduce claims --seeds N` trains the first N seeds of every arm; each comparison's n is the "
    "number of pairs it had.",
    "Networks: ResNet-26 -> ResNet-8 is the FSP paper's CIFAR-10 pair (equal channels 16/32/64 at every section, "
    "as FSP needs); KD, AT, FT and L1 use the same pair. DML's mixed cohort pairs ResNet-8 with ResNet-14 "
    "(a deeper net of the same family: MobileNet or a WRN, as in the DML paper, would cost more than this "
    "budget allows). All CIFAR networks are built for 1-channel 28x28 images (adaptive pooling).",
    "Method values are each method's defaults (see their provenance in the papers' reports) except: KD T = 4, "
    "weight 1; FitNets' KD baseline T = 3 with the soft term weighted 2/9 and its HT + KD lambda 4 -> 0, as in "
    f"FitNets Table 4; TSD K = {TSD_K} (Fashion-MNIST's confusable classes come in small groups: T-shirt/shirt/"
    "pullover/coat, sandal/sneaker/ankle boot), with the tolerant methods' default eta (for TSD 'auto', "
    "(K-1)/(0.8K) = 0.83 at K = 3: like label smoothing and the confidence penalty it leaves about 0.8 on the "
    "label; the first committed run used a fixed eta 1, which at K = 3 leaves 0.67).",
    f"Stage lengths (assumed, scaled with the budget): FSP stage 1 {FSP_STAGE.length:g} epochs at lr 1e-3 (the "
    f"paper's stage-1 lr) then {EPOCHS} epochs on the labels; FitNets' hint stage {HINT_PHASE.length:g} epochs, "
    f"then {EPOCHS} epochs of KD; FT's paraphraser {FT_PARAPHRASER.length:g} epochs at lr 0.1 before the "
    f"student's {EPOCHS}.",
    "FSP's 'fewer iterations' counts the iterations of its second stage (the paper's Table 1 convention) until "
    "its test error, evaluated after every epoch, first reaches the same seed's scratch ResNet-8's final error, "
    "against the scratch run's iterations; stage 1's iterations are stated beside it, not added.",
    "Verdicts: 'holds' when the 95% interval of the paired difference is above zero, 'reversed' when below, "
    "'inconclusive' otherwise; with three seeds an interval is wide (t = 4.30; five seeds: 2.78), so "
    "'inconclusive' often means 'too small to resolve at this scale', not 'false'.",
]


# -- specs -----------------------------------------------------------------------------------------
def spec(model: str, method: str = "scratch", teachers=(), seed: int = 0, stages=None, dataset: str = DATASET,
         train: Phase = PROTOCOL, images: int | None = TRAIN_IMAGES, **method_args) -> ExperimentSpec:
    """One training of this benchmark: every claim's spec is built here, so equal trainings share a run.
    `images`: the first N training images in class-balanced order (None: all)."""
    return ExperimentSpec(model=model, method=method, method_args=method_args, teachers=list(teachers),
                          dataset=dataset, augment="none", batch_size=BATCH, train=train,
                          stages=dict(stages or {}), seed=seed, train_subset=images)


def over_seeds(make, n: int = SEEDS) -> list[ExperimentSpec]:
    """`make(seed)` for the paired seeds 0..n-1."""
    return [make(s) for s in range(n)]


def alone(model: str = STUDENT, n: int = SEEDS) -> list[ExperimentSpec]:
    return over_seeds(lambda s: spec(model, seed=s), n)


def teacher() -> ExperimentSpec:
    """The ResNet-26, trained on all the training images: a teacher that knows more than the students
    can learn from their subset (as Hinton et al.'s MNIST students learnt from a transfer set)."""
    return spec(TEACHER, train=TEACHER_PROTOCOL, images=None)


def student(method: str, stages=None, n: int = MORE_SEEDS, **method_args) -> list[ExperimentSpec]:
    """The ResNet-8 taught by the ResNet-26 with `method`, one per seed."""
    return over_seeds(lambda s: spec(STUDENT, method, [teacher()], s, stages, **method_args), n)


ERR = "error (%)"


def arm(row: str, specs: list[ExperimentSpec], metric: str = "top1_err") -> Cell:
    return Cell(row, ERR, specs, metric=metric)


def table(key: str, title: str, cells: list[Cell], comparisons: list[Comparison], notes=()) -> Table:
    return Table(key, title, cells, paper_metric="top1_error", notes=list(notes), comparisons=comparisons,
                 paper_values=False)


# -- claims ----------------------------------------------------------------------------------------
ALONE = f"{NAMES[STUDENT]} alone"
TEACHER_ROW = f"{NAMES[TEACHER]} teacher"


def kd() -> Table:
    better = f"{NAMES[STUDENT]}, KD from the {NAMES[TEACHER]}"
    return table("kd", "KD (Hinton et al.): a small student distilled from a larger trained teacher",
                 [arm(TEACHER_ROW, [teacher()]), arm(ALONE, alone(n=MORE_SEEDS)), arm(better, student("kd"))],
                 [Comparison("KD beats training alone", better, ALONE)])


def fitnets() -> Table:
    def mnist(model, method="scratch", teachers=(), seed=0, stages=None, **args):
        return spec(model, method, teachers, seed, stages, dataset=MNIST, train=MNIST_PHASE, **args)

    maxout = spec(MNIST_TEACHER, dataset=MNIST, train=MNIST_TEACHER_PHASE, images=None)
    rows = {"FitNet alone": lambda s: mnist(MNIST_FITNET, seed=s),
            "FitNet, KD": lambda s: mnist(MNIST_FITNET, "kd", [maxout], s, temperature=3.0, weight=2.0 / 9.0),
            "FitNet, hints then KD": lambda s: mnist(MNIST_FITNET, "fitnets", [maxout], s,
                                                     {"hint": HINT_PHASE, "kd": MNIST_PHASE}, lambda_end=0.0)}
    cells = [arm("Maxout teacher (MNIST)", [maxout])] + [arm(r, over_seeds(m)) for r, m in rows.items()]
    return table("fitnets", "FitNets (Romero et al.), MNIST: a thin, deeper student with a hint stage then KD", cells,
                 [Comparison("Hints + KD beat KD alone", "FitNet, hints then KD", "FitNet, KD"),
                  Comparison("Hints + KD beat training alone", "FitNet, hints then KD", "FitNet alone")],
                 ["The paper's MNIST networks (Table 4): Goodfellow et al.'s maxout teacher and the authors' "
                  "6-layer FitNet, trained on MNIST."])


def fsp() -> Table:
    better = f"{NAMES[STUDENT]}, FSP stage 1 from the {NAMES[TEACHER]}"
    return table("fsp", "FSP (Yim et al.): fast optimisation from the teacher's flow of solution procedure",
                 [arm(TEACHER_ROW, [teacher()]), arm(ALONE, alone(n=MORE_SEEDS)),
                  arm(better, student("fsp", {"fsp": FSP_STAGE, "train": PROTOCOL}))],
                 [Comparison("FSP reaches the scratch student's final error in fewer iterations", better, ALONE,
                             kind="iterations", stage="train"),
                  Comparison("FSP ends with a lower error", better, ALONE)],
                 [f"Iterations count FSP's second stage only; its stage 1 trains {FSP_STAGE.length:g} epochs before "
                  f"it ({FSP_STAGE.length * (TRAIN_IMAGES // BATCH):g} iterations at this budget), and the scratch "
                  f"run {EPOCHS * (TRAIN_IMAGES // BATCH)}.",
                  "Investigated (python -m benchmarks.fsp_diagnosis, results/claims/diagnosis/fsp_weight_norms.md): "
                  "the FSP student starts stage 2 far ahead (after one epoch about 25% test error against the "
                  "scratch ResNet-8's 37%) and then learns more slowly. Stage 1 inflates the convolution weights "
                  "(9x their initial norm on average, the first convolution 27x); behind batch norm that leaves "
                  "what the network computes unchanged but divides the effective step of stage 2 by the square. "
                  "Rescaling them to their initial norms before stage 2 recovers about half of the gap to the "
                  "scratch student; the rest is not explained."])


def dml() -> Table:
    def cohort(peer, order="sequential"):  # Algorithm 1's order unless named (see benchmarks/dml.py)
        return over_seeds(lambda s: spec(STUDENT, "dml", seed=s, peers=[peer], update_order=order))

    same, mixed, one_pass = cohort(STUDENT), cohort(PEER), cohort(STUDENT, "simultaneous")
    r8, r14 = NAMES[STUDENT], NAMES[PEER]
    cells = [arm(ALONE, alone()), arm(f"{r14} alone", alone(PEER)),
             arm(f"{r8} of a {r8} pair (net 1)", same), arm(f"{r8} of a {r8} pair (net 2)", same, "net2_top1_err"),
             arm(f"{r8} of a {r8} + {r14} cohort", mixed), arm(f"{r14} of a {r8} + {r14} cohort", mixed,
                                                                  "net2_top1_err"),
             arm(f"{r8} of a {r8} pair updated from one forward pass (net 1)", one_pass),
             arm(f"{r8} of a {r8} pair updated from one forward pass (net 2)", one_pass, "net2_top1_err")]
    return table("dml", "DML (Zhang et al.): every network of a cohort trained mutually beats it trained alone", cells,
                 [Comparison("Same architectures: net 1 beats training alone", cells[2].row, ALONE),
                  Comparison("Same architectures: net 2 beats training alone", cells[3].row, ALONE),
                  Comparison("Mixed architectures: the ResNet-8 beats training alone", cells[4].row, ALONE),
                  Comparison("Mixed architectures: the ResNet-14 beats training alone", cells[5].row, cells[1].row),
                  Comparison("Algorithm 1's update order beats one forward pass: net 1", cells[2].row, cells[6].row),
                  Comparison("Algorithm 1's update order beats one forward pass: net 2", cells[3].row, cells[7].row)],
                 ["Every cohort follows Algorithm 1 (network 1 updated, the predictions recomputed, then network 2: "
                  "`update_order: sequential`) except the one updated from one forward pass (`simultaneous`): the "
                  "evidence on which the dml method's default order was chosen (`simultaneous`; see its note).",
                  "Why DML does not hold here (investigated): an engine test shows a network of a pair trains "
                  "exactly as alone once its mimicry term is zeroed (tests/test_engine.py), so the difference is "
                  "the term itself. Mutual learning is a regulariser; in this regime a ResNet-8 alone ends with a "
                  "training cross-entropy of 0.23 (it does not fit its 8,000 images) and every cohort ends higher "
                  "(ResNet-8s 0.26-0.31; the ResNet-14 0.25 against 0.16 alone). The dml_fitting table trains the same cohorts where the networks fit their "
                  "images."])


def fitting(method: str = "scratch", teachers=(), seed: int = 0, **method_args) -> ExperimentSpec:
    """A ResNet-8 of the fitting regime: `FIT_IMAGES` images for `FIT_EPOCHS` epochs."""
    return spec(STUDENT, method, teachers, seed, train=FIT_PROTOCOL, images=FIT_IMAGES, **method_args)


FIT_CE = "final training cross-entropy"


def fitting_arm(row: str, specs: list[ExperimentSpec], net: int | None = None) -> list[Cell]:
    """An arm of a fitting-regime table: its error and its final training cross-entropy, which shows
    whether the network fit its images (`net`: network k of a DML cohort)."""
    err, ce = ("top1_err", "train_loss_ce") if net is None else (f"net{net}_top1_err", f"train_loss_ce_net{net}")
    return [arm(row, specs, err), Cell(row, FIT_CE, specs, ce)]


def dml_fitting() -> Table:
    """The dml table's cohorts again where a ResNet-8 fits its training images: mutual learning is a
    regulariser (the paper: it finds wider minima), which can only pay where there is overfitting to
    regularise. In the dml table's regime a ResNet-8 alone ends its 10 epochs with a training
    cross-entropy of 0.23, far from fitting its 8,000 images, and every cohort trains to a higher one."""
    def arms(method="scratch", **args):
        return over_seeds(lambda s: fitting(method, seed=s, **args))

    r8 = NAMES[STUDENT]
    alone_, algorithm1 = arms(), arms("dml", peers=[STUDENT], update_order="sequential")
    one_pass = arms("dml", peers=[STUDENT], update_order="simultaneous")
    rows = {"alone": f"{r8} alone", "a1": f"{r8} pair, Algorithm 1's order (net 1)",
            "a2": f"{r8} pair, Algorithm 1's order (net 2)", "p1": f"{r8} pair, one forward pass (net 1)",
            "p2": f"{r8} pair, one forward pass (net 2)"}
    cells = fitting_arm(rows["alone"], alone_)
    for key, specs in (("a", algorithm1), ("p", one_pass)):
        for k in (1, 2):
            cells += fitting_arm(rows[f"{key}{k}"], specs, k)
    return table("dml_fitting", f"DML where the networks fit their images ({FIT_IMAGES:,} images, {FIT_EPOCHS} "
                                f"epochs): is the dml table's reversal the regime?", cells,
                 [Comparison("Algorithm 1's order: net 1 beats training alone", rows["a1"], rows["alone"], col=ERR),
                  Comparison("Algorithm 1's order: net 2 beats training alone", rows["a2"], rows["alone"], col=ERR),
                  Comparison("One forward pass: net 1 beats training alone", rows["p1"], rows["alone"], col=ERR),
                  Comparison("One forward pass: net 2 beats training alone", rows["p2"], rows["alone"], col=ERR),
                  Comparison("Algorithm 1's order beats one forward pass: net 1", rows["a1"], rows["p1"], col=ERR),
                  Comparison("Algorithm 1's order beats one forward pass: net 2", rows["a2"], rows["p2"], col=ERR)],
                 [f"The first {FIT_IMAGES:,} training images in class-balanced order, {FIT_EPOCHS} epochs (the dml "
                  f"table's number of steps), otherwise the dml table's protocol; the comparisons compare the error "
                  f"column."])


def feed() -> Table:
    teachers = [spec(STUDENT, seed=s) for s in FEED_TEACHER_SEEDS]
    stack1 = over_seeds(lambda s: spec(STUDENT, "feed", teachers[:1], s))
    stack2 = [spec(STUDENT, "feed", [parent], parent.seed + GENERATION_SEED) for parent in stack1]
    pfeed = over_seeds(lambda s: spec(STUDENT, "feed", teachers, s))
    rows = {"pFEED": "pFEED, three scratch ResNet-8 teachers", "one": "FEED, one teacher (sFEED Stack-1)",
            "stack2": "sFEED Stack-2 (taught by Stack-1)"}
    cells = [arm("ResNet-8 teachers (scratch)", teachers), arm(ALONE, alone()), arm(rows["one"], stack1),
             arm(rows["pFEED"], pfeed), arm(rows["stack2"], stack2)]
    return table("feed", "FEED (Park & Kwak): feature-level ensembles of same-architecture teachers", cells,
                 [Comparison("pFEED beats training alone", rows["pFEED"], ALONE),
                  Comparison("pFEED beats FEED from one teacher", rows["pFEED"], rows["one"]),
                  Comparison("sFEED Stack-2 beats Stack-1", rows["stack2"], rows["one"],
                             seed_offset=GENERATION_SEED)])


TERMS = {"TSD": "tsd", "label smoothing": "ls", "confidence penalty": "cp"}


def tolerant() -> Table:
    def lineage(patriarchs):  # generation 1 of each patriarch
        return [spec(STUDENT, "tolerant_student", [p], p.seed + GENERATION_SEED) for p in patriarchs]

    strict = alone()
    cells = [arm("Strict patriarch (cross-entropy; = ResNet-8 alone)", strict),
             arm("Generation 1 of the strict patriarch", lineage(strict))]
    comparisons = []
    for name, term in TERMS.items():
        anchor = {"tsd_anchor": "top"} if term == "tsd" else {}  # the paper's TSD, named (see benchmarks/tsd.py)
        patriarchs = over_seeds(lambda s: spec(STUDENT, "tolerant", seed=s, term=term, k=TSD_K, **anchor))
        cells += [arm(f"{name} patriarch", patriarchs), arm(f"Generation 1 of the {name} patriarch", lineage(patriarchs))]
        comparisons.append(Comparison(f"A {name} patriarch teaches a better generation 1 than a strict one",
                                      cells[-1].row, cells[1].row))
    return table("tolerant", "Tolerant teacher (Yang et al.): a more tolerant patriarch educates a better student",
                 cells, comparisons,
                 ["All networks are ResNet-8s; generation 1 learns from its patriarch (tolerant_student: CE + KD at "
                  "T = 1, no tolerance term of its own).",
                  "Investigated: the first committed run found TSD reversed (-0.79 points [-1.10, -0.48]) with a "
                  "fixed eta 1, which at this table's K = 3 made the TSD patriarch far more tolerant (0.67 on the "
                  "label) than its label-smoothing and confidence-penalty rivals (0.8); TSD's default eta now "
                  "follows K. The strict patriarch itself ends with a training cross-entropy of 0.23 (about 0.8 "
                  "left on the label): in this regime it is already as tolerant as the terms ask, so a tolerance "
                  "term has nothing to add. The tolerant_fitting table trains the TSD lineage where the "
                  "networks fit their images."])


def tolerant_fitting() -> Table:
    """The tolerant table's TSD lineage again where a ResNet-8 fits its training images. A tolerant
    teacher is meant to keep secondary information that a strict one, fitting one-hot labels, loses; in
    the tolerant table's regime the strict patriarch ends with a training cross-entropy of 0.23, so its
    label already keeps about 0.8 of the mass (exp(-0.23)), what the default eta asks of TSD."""
    strict = over_seeds(lambda s: fitting(seed=s))
    tsd = over_seeds(lambda s: fitting("tolerant", seed=s, term="tsd", k=TSD_K, tsd_anchor="top"))

    def generation1(patriarchs):
        return [fitting("tolerant_student", [p], p.seed + GENERATION_SEED) for p in patriarchs]

    rows = {"strict": "Strict patriarch (= ResNet-8 alone)", "g_strict": "Generation 1 of the strict patriarch",
            "tsd": "TSD patriarch", "g_tsd": "Generation 1 of the TSD patriarch"}
    cells = []
    for key, specs in (("strict", strict), ("g_strict", generation1(strict)), ("tsd", tsd), ("g_tsd", generation1(tsd))):
        cells += fitting_arm(rows[key], specs)
    return table("tolerant_fitting", f"Tolerant teacher where the networks fit their images ({FIT_IMAGES:,} images, "
                                     f"{FIT_EPOCHS} epochs): is the tolerant table's result the regime?", cells,
                 [Comparison("A TSD patriarch teaches a better generation 1 than a strict one", rows["g_tsd"],
                             rows["g_strict"], col=ERR)],
                 [f"The dml_fitting table's regime ({FIT_IMAGES:,} images, {FIT_EPOCHS} epochs; its ResNet-8 alone "
                  f"is the strict patriarch), otherwise the tolerant table's protocol; the comparison uses the "
                  f"error column."])


def baselines() -> Table:
    rows = {"AT": "at", "FT": "ft", "L1": "l1"}
    cells = [arm(ALONE, alone(n=MORE_SEEDS))]
    comparisons = []
    for name, method in rows.items():
        stages = {"paraphraser": FT_PARAPHRASER, "train": PROTOCOL} if method == "ft" else None
        row = f"{NAMES[STUDENT]}, {name} from the {NAMES[TEACHER]}"
        cells.append(arm(row, student(method, stages)))
        comparisons.append(Comparison(f"{name} beats training alone", row, ALONE))
    return table("baselines", "FEED's baselines: attention transfer, factor transfer and L1 on the final features",
                 cells, comparisons)


# -- the summary plot ---------------------------------------------------------------------------------
def draw_verdicts(paper, rows, budget, curves, path):
    """Every claim's paired difference with its 95% interval (a forest plot): differences in test error
    above, FSP's iterations saved below, each row labelled with its verdict."""
    from matplotlib.figure import Figure

    from kd_methods.report import table_comparisons, table_summaries

    found = [(t.key, c) for t in paper.tables
             for c in table_comparisons(t, table_summaries(t, rows, budget), curves)]
    panels = [(kind, [(k, c) for k, c in found if c["kind"] == kind], label) for kind, label in
              (("final", "paired difference in test error, points (> 0 supports the claim)"),
               ("iterations", "iterations saved (> 0 supports the claim)"))]
    fig = Figure(figsize=(9, 0.36 * len(found) + 2.2), layout="constrained")
    axes = fig.subplots(2, 1, height_ratios=[max(1, len(p[1])) for p in panels])
    colors = {"holds": "tab:green", "reversed": "tab:red"}
    for ax, (kind, mine, label) in zip(axes, panels):
        for y, (_, c) in enumerate(mine):
            if c["diff"] is None:
                ax.annotate("not run", (0, y), ha="center", va="center", fontsize=7, color="0.5")
                continue
            err = None if c["low"] is None else [[c["diff"] - c["low"]], [c["high"] - c["diff"]]]
            ax.errorbar(c["diff"], y, xerr=err, fmt="o", color=colors.get(c["verdict"], "tab:gray"), capsize=3)
        ax.axvline(0, color="0.3", lw=0.8)
        ax.set_yticks(range(len(mine)), [f"{k}: {c['claim']}" for k, c in mine], fontsize=7)
        ax.set_ylim(len(mine) - 0.5, -0.5)
        ax.set_xlabel(label, fontsize=8)
        ax.grid(axis="x", alpha=0.3)
    title = "Headline claims on real data, paired by seed: 95% intervals (green holds, red reversed, grey inconclusive)"
    fig.suptitle(figure_title(title, budget, rows), fontsize=9)
    save(fig, path)


def paper() -> Paper:
    return Paper(
        key=KEY,
        title="Headline claims of the five papers on real images (Fashion-MNIST / MNIST, 2-core CPU scale)",
        citation="FEED (Park & Kwak 2019), DML (Zhang et al. 2018), FitNets (Romero et al. 2015), FSP (Yim et al. "
                 "2017), tolerant teacher (Yang et al. 2018), and the baselines KD, AT, FT and L1",
        tables=[kd(), fitnets(), fsp(), dml(), dml_fitting(), feed(), tolerant(), tolerant_fitting(), baselines()],
        plots=[Plot("verdicts", "Every claim's paired difference with its 95% interval", draw_verdicts)],
        protocol_notes=PROTOCOL_NOTES,
    )
