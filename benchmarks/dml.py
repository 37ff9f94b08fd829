"""Deep Mutual Learning: Zhang, Xiang, Hospedales & Lu, "Deep Mutual Learning", CVPR 2018.

A cohort of networks trains together from scratch; each minimises its cross-entropy plus the mean KL
divergence from the other networks' predictions (Eq. 10, method `dml`, `peers` = networks 2..K). The
`dml` run evaluates every network: network 1 as `top1_err` (and `net1_top1_err`), network k as
`netk_top1_err` (likewise `entropy`, `netk_entropy`).

What is declared here, and how cells map to runs:

- Shared runs: `independent(model)` is the scratch run of an architecture (the paper's "Independent"
  numbers, one per architecture: Net1 and Net2 of a same-architecture pair show the same run, as the
  paper prints the same number for both). `mutual(net1, peers)` is one DML run; its networks fill the
  "DML net1" and "DML net2" cells. Identical specs hash to identical run ids, so Table 2, Table 4, the
  cohort study and the entropy table share every run they have in common.
- Table 2 (`table2`, CIFAR-100): rows = the six Net1/Net2 pairs of the paper; columns Independent net1,
  Independent net2, DML net1, DML net2. The paper's DML - Independent gains are differences of these
  cells; `table2_gains.png` plots ours against the paper's (see the note on its typo).
- Table 4 (`table4_cifar100`, `table4_market1501`): DML against distillation from a pretrained peer:
  "1 distills 2" is a `kd` student Net2 whose teacher is the Independent Net1 run (T = 1, the same
  mimicry loss DML uses, with the teacher fixed). Market-1501 cells report mAP.
- Table 3 (`table3_market1501`): Market-1501 rank-1 and mAP of each network, independent vs DML, for the
  pairs of Table 4 (the paper's Table 3 values were not transcribed).
- Cohort size (`cohort_cifar100`, `cohort_market1501`): K = 1 (independent) .. 5 networks of one
  architecture; cells show each network of the cohort; `cohort.png` plots the mean and the best network
  against K (the paper's Fig. 2 plots Market-1501 mAP of MobileNet cohorts; the CIFAR-100 ResNet-32
  version is ours and runs without Market-1501).
- DML vs DML_e (`dml_vs_dmle`, CIFAR-100 ResNet-32, K = 3..5; for K = 2 they coincide): DML_e mimics the
  peers' averaged prediction (`variant: dml_e`). Cells show network 1; `dml_vs_dmle.png` plots the cohort
  mean. The DML cells are the cohort study's runs.
- Posterior entropy (`entropy`, Sec. 3.6): mean entropy of the ResNet-32 posteriors, independent vs DML
  (network 1 of the ResNet-32/ResNet-32 pair of Table 2).
- Update order (`update_order`, CIFAR-100, Table 2's ResNet-32 pair): Algorithm 1's order (network 1
  updated, predictions recomputed, then network 2: `update_order: sequential`, every DML run's order here;
  the method's default is the other form, chosen from real-data evidence, see the protocol notes)
  beside both networks updated from one forward pass (`simultaneous`). Its sequential cells are Table 2's
  runs.

Market-1501 cells need data/market1501 (they are reported "not run" without it); the engine scores the
query/gallery ranking (CMC rank-1 and mAP, `kd_methods.eval_reid`) after each run's last epoch.
"""
from __future__ import annotations

from pathlib import Path

from kd_methods.runs.spec import ExperimentSpec, Optim, Phase, Pretrained

from .core import Cell, Paper, Plot, Table, load_references
from .plots import cell_runs, empty_panel, figure_title, save

KEY = "dml"
N_SEEDS = 1              # runs per cell (assumed: the paper prints single numbers)
DISTILL_SEED = 100       # "1 distills 2" students: seeds 100.. so no student starts from its teacher's init

# Display name -> model name, CIFAR-100 (32x32) and Market-1501 (256x128).
CIFAR_MODELS = {"ResNet-32": "cifar_resnet32", "MobileNet": "cifar_mobilenet", "WRN-28-10": "cifar_wrn_28_10"}
MARKET_MODELS = {"MobileNet": "mobilenetv1_100", "InceptionV1": "inception_v3"}

# Table 2's Net1/Net2 pairs, in the paper's order.
TABLE2_PAIRS = [("ResNet-32", "ResNet-32"), ("WRN-28-10", "ResNet-32"), ("MobileNet", "ResNet-32"),
                ("MobileNet", "MobileNet"), ("WRN-28-10", "MobileNet"), ("WRN-28-10", "WRN-28-10")]
TABLE4_CIFAR_PAIRS = [("WRN-28-10", "ResNet-32"), ("MobileNet", "ResNet-32")]
MARKET_PAIRS = [("InceptionV1", "MobileNet"), ("MobileNet", "MobileNet")]
COHORT_SIZES = (1, 2, 3, 4, 5)
DMLE_SIZES = (3, 4, 5)
COHORT_CIFAR, COHORT_MARKET = "ResNet-32", "MobileNet"
# Every DML run names its update order (so runs of the other order are never reused for it): Algorithm 1's.
DML_ORDER = "sequential"
ORDERS = {"sequential (Algorithm 1)": "sequential", "simultaneous (one forward pass)": "simultaneous"}

# ImageNet weights of the Market-1501 networks (the paper's initialisation there), used when the file is
# present. torchvision names its files with the first 8 hex digits of their sha256 (and checks them so).
# No ImageNet MobileNet v1 file with a recorded checksum is known to this suite: add one here.
IMAGENET_WEIGHTS = {
    "InceptionV1": Pretrained(
        model="inception_v3", path="data/pretrained/inception_v3_google-0cc3c7bd.pth", sha256="0cc3c7bd",
        num_classes=1000, ignore=["AuxLogits."],   # the file's auxiliary classifier, which timm's net lacks
        source="torchvision Inception_V3_Weights.IMAGENET1K_V1, "
               "https://download.pytorch.org/models/inception_v3_google-0cc3c7bd.pth"),
}

# CIFAR-100 (paper, Sec. 3.1): SGD with Nesterov momentum 0.9, lr 0.1, batch 64, lr x0.1 every 60 epochs,
# 200 epochs, flips + random crops from 4-pixel reflection padding. Weight decay: not stated (assumed).
CIFAR_PROTOCOL = Phase(200, "epoch", Optim("sgd", lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4,
                                           schedule="step", step_size=60, gamma=0.1))
CIFAR_BATCH = 64
# Market-1501 (paper, Sec. 3.1): Adam, lr 2e-4, beta1 0.5, beta2 0.999, batch 16, 100,000 iterations.
# Weight decay 4e-5: the released code's default (not stated in the paper). Constant lr (no decay stated).
MARKET_PROTOCOL = Phase(100_000, "iter", Optim("adam", lr=2e-4, momentum=0.5, alpha=0.999, eps=1e-8,
                                               weight_decay=4e-5, schedule="constant"))
MARKET_BATCH = 16

PROTOCOL_NOTES = [
    "paper (CIFAR-100): SGD with Nesterov momentum 0.9, lr 0.1, batch 64, lr x0.1 every 60 epochs, 200 epochs, "
    "horizontal flips and random crops from images padded by 4 pixels with reflections.",
    "assumed (CIFAR-100): weight decay 5e-4 (not stated; the value of the WRN recipe the paper says it follows).",
    "paper (Market-1501): Adam, lr 0.0002, beta1 0.5, beta2 0.999, batch 16, 100,000 iterations; 751-way "
    "classification, matching by the features of the last pooling layer; CMC rank-1 and mAP.",
    "code (Market-1501): weight decay 4e-5 (default of the released train_image_classifier.py); constant lr. "
    "The released script also trains with label smoothing 0.1, which the paper does not mention: not used.",
    "assumed (Market-1501): input 256x128 (the released code resizes to the network's default size); train "
    "augmentation = resize + horizontal flip (augment 'reid'); rank-1/mAP scored once, after the last "
    "iteration, by Euclidean distance between pooled features (the paper's 'last pooling layer').",
    "paper (Market-1501): the networks start from ImageNet weights (the paper also reports results without "
    "pre-training). Changed: the suite first trained every Market-1501 network from scratch; now a network "
    "starts from its ImageNet weights when their file is present (IMAGENET_WEIGHTS in benchmarks/dml.py: "
    "InceptionV1's stand-in from torchvision's inception_v3 file, data/pretrained/inception_v3_google-0cc3c7bd.pth, "
    "its auxiliary classifier dropped; the 751-way classifier is fresh). They do so only when every Market-1501 "
    "network's file is present, so no table compares a pretrained network with one trained from scratch; a "
    "DML cohort's networks of network 1's architecture start from the same file, and the InceptionV1/MobileNet "
    "cohort's MobileNet would still start fresh (a run names one weights file; a deviation). No ImageNet "
    "MobileNet v1 file with a recorded checksum is known to the suite, so today every Market-1501 network "
    "trains from scratch (a deviation) until one is added.",
    "deviation (Market-1501): InceptionV1 is not in the model zoo; timm's inception_v3 stands in for it "
    "(MobileNet is timm's mobilenetv1_100, the ImageNet MobileNet v1). CIFAR MobileNet is the zoo's "
    "cifar_mobilenet (3.3M parameters with 100 classes, as DML Table 1).",
    f"assumed: {N_SEEDS} run(s) per cell (the paper prints single numbers); raise N_SEEDS in benchmarks/dml.py "
    "for mean ± std.",
    "assumed: 'Independent' Net1 and Net2 of a same-architecture pair are the same run (the paper prints the "
    "same number for both).",
    "assumed (Table 4 '1 distills 2'): the student is trained with the kd method at T = 1 and weight 1 (DML's "
    "mimicry loss with the pretrained peer fixed); its teacher is the Independent Net1 run; its seed is "
    f"{DISTILL_SEED}+seed so it does not start from its teacher's initialisation.",
    "deviation (posterior entropy): the paper averages over the training set; the engine evaluates the test set.",
    "paper (Algorithm 1): within each step network 1 is updated, the predictions are recomputed, then network 2 "
    "is updated (the released code does the same, one train op per network); every DML run here does so "
    "(`update_order: sequential`, named in each spec: these tables reproduce the paper's algorithm). The "
    "update_order table runs Table 2's ResNet-32 pair both ways. The dml method's own default is the other "
    "form, `simultaneous` (all networks from one forward pass), chosen from real-data evidence: on "
    "Fashion-MNIST (results/claims/dml.md, dml_fitting.md) Algorithm 1's order was worse where the networks "
    "do not fit their images (network 1: -0.79 points, 95% interval [-1.15, -0.44], 3 seeds) and where they "
    "do (-0.46 [-0.88, -0.05]), at K*K forward passes a step instead of K (1.4x a ResNet-32 pair's step on 2 "
    "CPU cores).",
]


# -- specs -----------------------------------------------------------------------------------------
def cifar(model: str, method: str = "scratch", method_args=None, teachers=(), seed: int = 0) -> ExperimentSpec:
    """One CIFAR-100 training with DML's protocol; every CIFAR spec of this paper is built here."""
    return ExperimentSpec(model=CIFAR_MODELS[model], method=method, method_args=dict(method_args or {}),
                          teachers=list(teachers), dataset="cifar100", augment="crop_flip_reflect",
                          batch_size=CIFAR_BATCH, train=CIFAR_PROTOCOL, seed=seed)


def imagenet_init(model: str) -> Pretrained | None:
    """The Market-1501 network's ImageNet weights when their file is present."""
    weights = IMAGENET_WEIGHTS.get(model)
    return weights if weights is not None and Path(weights.path).is_file() else None


def market_from_imagenet() -> bool:
    """Whether the Market-1501 runs start from ImageNet weights (the paper's start): only when every
    Market-1501 network's file is present, so that no table compares a pretrained network with one
    trained from scratch."""
    return all(imagenet_init(m) for m in MARKET_MODELS)


def market_init_note() -> str:
    """Which start the Market-1501 runs of this report took (decided when the tables were declared)."""
    if market_from_imagenet():
        return ("Every network starts from its ImageNet weights (the paper's start): "
                + "; ".join(f"{m}: {w.path}" for m, w in IMAGENET_WEIGHTS.items()) + ".")
    missing = [f"{m} ({IMAGENET_WEIGHTS[m].path} not present)" if m in IMAGENET_WEIGHTS else f"{m} (none recorded)"
               for m in MARKET_MODELS if not imagenet_init(m)]
    return (f"Trained from scratch, a deviation: no ImageNet weights for {', '.join(missing)} (the paper starts "
            "from ImageNet weights; see Protocol).")


def market(model: str, method: str = "scratch", method_args=None, teachers=(), seed: int = 0) -> ExperimentSpec:
    """One Market-1501 training (751 identities) with DML's protocol, from ImageNet weights when all of
    them are present (a DML cohort's networks of network 1's architecture start from the same file)."""
    return ExperimentSpec(model=MARKET_MODELS[model], method=method, method_args=dict(method_args or {}),
                          teachers=list(teachers), dataset="market1501", batch_size=MARKET_BATCH,
                          train=MARKET_PROTOCOL, seed=seed,
                          init=imagenet_init(model) if market_from_imagenet() else None)


BUILDERS = {"cifar100": (cifar, CIFAR_MODELS), "market1501": (market, MARKET_MODELS)}


def independent(model: str, data: str = "cifar100", seed: int = 0) -> ExperimentSpec:
    return BUILDERS[data][0](model, "scratch", seed=seed)


def mutual(net1: str, peers: list[str], data: str = "cifar100", variant: str = "dml", seed: int = 0,
           order: str = DML_ORDER) -> ExperimentSpec:
    """One DML cohort: network 1 is `net1`, networks 2..K are `peers`, updated in `order`."""
    build, names = BUILDERS[data]
    args = {"peers": [names[p] for p in peers], "update_order": order}
    if variant != "dml":
        args["variant"] = variant
    return build(net1, "dml", args, seed=seed)


def distilled(teacher: str, student: str, data: str = "cifar100", seed: int = 0) -> ExperimentSpec:
    """Table 4's '1 distills 2': Net2 learns from the (fixed) Independent Net1 run."""
    return BUILDERS[data][0](student, "kd", {"temperature": 1.0, "weight": 1.0},
                             teachers=[independent(teacher, data, seed)], seed=DISTILL_SEED + seed)


def runs(build, n: int = N_SEEDS) -> list[ExperimentSpec]:
    """The cell's specs: `build(seed)` for seeds 0..n-1."""
    return [build(s) for s in range(n)]


def pair_row(net1: str, net2: str) -> str:
    return f"Net1={net1}, Net2={net2}"


def net_metric(k: int, metric: str = "top1_err") -> str:
    """Network k's metric in a DML run (network 1 is the headline, unprefixed)."""
    return metric if k == 1 else f"net{k}_{metric}"


# -- tables ----------------------------------------------------------------------------------------
def pair_cells(net1: str, net2: str, data: str, metric: str) -> list[Cell]:
    """Independent net1/net2 and DML net1/net2 cells of one pair (both DML cells are one run)."""
    row = pair_row(net1, net2)
    return [
        Cell(row, "Independent net1", runs(lambda s: independent(net1, data, s)), metric),
        Cell(row, "Independent net2", runs(lambda s: independent(net2, data, s)), metric),
        Cell(row, "DML net1", runs(lambda s: mutual(net1, [net2], data, seed=s)), metric),
        Cell(row, "DML net2", runs(lambda s: mutual(net1, [net2], data, seed=s)), net_metric(2, metric)),
    ]


def table2() -> Table:
    cells = [c for a, b in TABLE2_PAIRS for c in pair_cells(a, b, "cifar100", "top1_err")]
    return Table("table2", "Table 2: CIFAR-100 top-1 accuracy (%), two-network cohorts: independent vs DML",
                 cells, paper_metric="top1_acc", notes=[
                     "The paper also prints the gains DML - Independent, which are differences of the cells "
                     "above; table2_gains.png plots ours against the paper's. The paper prints 1.20 for "
                     "ResNet-32/ResNet-32 net1 where 71.19 - 68.99 = 2.20 (a typo in the paper; the values "
                     "71.19 and 68.99 are kept as printed).",
                     "Independent Net1 and Net2 of a same-architecture pair are the same run."])


def table4(data: str) -> Table:
    pairs, metric = (TABLE4_CIFAR_PAIRS, "top1_err") if data == "cifar100" else (MARKET_PAIRS, "mAP")
    cells = []
    for a, b in pairs:
        cells += pair_cells(a, b, data, metric)
        cells.append(Cell(pair_row(a, b), "1 distills 2", runs(lambda s: distilled(a, b, data, s)), metric,
                          note="Net2 trained with KD from the Independent Net1 run"))
    cols = ["Independent net1", "Independent net2", "1 distills 2", "DML net1", "DML net2"]
    if data == "cifar100":
        return Table("table4_cifar100", "Table 4 (CIFAR-100): top-1 accuracy (%), DML vs distillation from a "
                                        "pretrained Net1", cells, cols=cols, paper_metric="top1_acc",
                     notes=["'1 distills 2': Net2 trained by KD (T = 1) from the Independent Net1 run."])
    return Table("table4_market1501", "Table 4 (Market-1501): mAP (%), DML vs distillation from a pretrained "
                                      "Net1", cells, cols=cols, paper_metric="mAP",
                 notes=["'1 distills 2': Net2 trained by KD (T = 1) from the Independent Net1 run.",
                        market_init_note(), "InceptionV1 is stood in for by inception_v3."])


def table3() -> Table:
    cells = []
    for a, b in MARKET_PAIRS:
        for k, net in ((1, a), (2, b)):
            row = f"{net} ({'Net1' if k == 1 else 'Net2'} of {a}/{b})"
            for what, metric in (("rank-1", "rank1"), ("mAP", "mAP")):
                cells.append(Cell(row, f"Independent {what}", runs(lambda s: independent(net, "market1501", s)),
                                  metric))
                cells.append(Cell(row, f"DML {what}", runs(lambda s: mutual(a, [b], "market1501", seed=s)),
                                  net_metric(k, metric)))
    return Table("table3_market1501", "Table 3: Market-1501 rank-1 and mAP (%), independent vs DML", cells,
                 cols=["Independent rank-1", "Independent mAP", "DML rank-1", "DML mAP"], paper_metric="mAP",
                 notes=["The pairs are those of Table 4's Market-1501 rows; check them against the paper's "
                        "Table 3 when filling its values.", market_init_note()])


def cohort(model: str, data: str, k: int, variant: str = "dml", seed: int = 0) -> ExperimentSpec:
    """A cohort of k networks of one architecture; k = 1 is the independent run."""
    return independent(model, data, seed) if k == 1 else mutual(model, [model] * (k - 1), data, variant, seed)


def cohort_table(data: str) -> Table:
    model, metric = (COHORT_CIFAR, "top1_err") if data == "cifar100" else (COHORT_MARKET, "mAP")
    cells = [Cell(f"K={k}", f"net{i}", runs(lambda s: cohort(model, data, k, seed=s)), net_metric(i, metric))
             for k in COHORT_SIZES for i in range(1, k + 1)]
    what = "top-1 accuracy" if data == "cifar100" else "mAP"
    title = (f"Cohort size ({'CIFAR-100' if data == 'cifar100' else 'Market-1501, Fig. 2'}): {model} cohorts "
             f"of K networks, {what} (%) of each network")
    notes = ["The paper plots cohort sizes only (Fig. 2: Market-1501 mAP of MobileNet cohorts); no reference "
             "values. cohort.png plots the mean and the best network against K."]
    if data == "market1501":
        notes.append(market_init_note())
    if data == "cifar100":
        notes.append("The CIFAR-100 ResNet-32 cohorts are this suite's addition, runnable without Market-1501 "
                     "(which must be fetched by hand); they use Table 2's protocol.")
    return Table(f"cohort_{data}", title, cells, paper_metric="top1_acc" if data == "cifar100" else "mAP",
                 notes=notes)


def dmle_table() -> Table:
    cells = []
    for k in DMLE_SIZES:
        for col, variant in (("DML", "dml"), ("DML_e", "dml_e")):
            cells.append(Cell(f"K={k}", col, runs(lambda s: cohort(COHORT_CIFAR, "cifar100", k, variant, s))))
    return Table("dml_vs_dmle", f"DML vs DML_e (CIFAR-100, {COHORT_CIFAR} cohorts): top-1 accuracy (%) of "
                                "network 1", cells, paper_metric="top1_acc",
                 notes=["DML_e mimics the average of the peers' predictions (Sec. 2.3); the paper finds it worse. "
                        "For K = 2 the two coincide. dml_vs_dmle.png plots the mean over all K networks.",
                        "The paper's DML_e comparison was not transcribed; the DML runs are the cohort study's."])


def update_order_table() -> Table:
    """Table 2's ResNet-32 pair under both update orders (the sequential cells are Table 2's runs)."""
    net = COHORT_CIFAR
    cells = [Cell(row, f"DML net{k}", runs(lambda s: mutual(net, [net], seed=s, order=order)), net_metric(k))
             for row, order in ORDERS.items() for k in (1, 2)]
    return Table("update_order", f"DML update order (CIFAR-100, Table 2's {net}/{net} pair): top-1 accuracy (%) "
                                 "of each network", cells, paper_metric="top1_acc",
                 notes=["sequential: Algorithm 1, network 1 updated, the predictions recomputed, then network 2 "
                        "(every DML run's order); simultaneous: both updated from one forward pass. The paper's "
                        "values are its Table 2 (Algorithm 1); it reports no other order."])


def entropy_table() -> Table:
    model = COHORT_CIFAR
    cells = [Cell(model, "Independent", runs(lambda s: independent(model, "cifar100", s)), "entropy"),
             Cell(model, "DML", runs(lambda s: mutual(model, [model], "cifar100", seed=s)), "entropy",
                  note="network 1 of the ResNet-32/ResNet-32 cohort")]
    return Table("entropy", "Posterior entropy (Sec. 3.6): mean entropy (nats) of ResNet-32's predictions, "
                            "independent vs DML", cells, paper_metric="entropy",
                 notes=["Ours: mean over the test set at the end of training; the paper's: over the training "
                        "set. DML's peers match each other's secondary probabilities, so its posteriors are "
                        "expected to be flatter (higher entropy)."])


# -- plots -----------------------------------------------------------------------------------------
def _finished(rows, table_key: str, cell, budget) -> list[dict]:
    return cell_runs(rows, table_key, cell, budget)


def _value(row: dict, metric: str) -> float | None:
    from kd_methods.report import metric_value
    return metric_value(row, metric)


def _cohort_errors(rows, table, row_label: str, budget, metric: str) -> list[float]:
    """Per-network values of the first run of a cohort row (every cell of the row is the same run)."""
    out = []
    for cell in (c for c in table.cells if c.row == row_label):
        found = _finished(rows, table.key, cell, budget)
        v = _value(found[0], cell.metric) if found else None
        if v is not None:
            out.append(v)
    return out


def _as_paper(v: float, metric: str) -> float:
    return 100.0 - v if metric.endswith("top1_err") else v


def draw_cohort(paper, rows, budget, curves, path):
    """Mean and best network against the cohort size K, one panel per cohort table."""
    from matplotlib.figure import Figure


    tables = [t for t in paper.tables if t.key.startswith("cohort_")]
    fig = Figure(figsize=(5.2 * len(tables), 4.2), layout="constrained")
    used = []
    for i, table in enumerate(tables):
        ax = fig.add_subplot(1, len(tables), i + 1)
        metric = table.cells[0].metric
        xs, means, bests = [], [], []
        for row in table.rows:
            values = [_as_paper(v, metric) for v in _cohort_errors(rows, table, row, budget, metric)]
            if values:
                xs.append(int(row.split("=")[1]))
                means.append(sum(values) / len(values))
                bests.append(max(values))
                used += _finished(rows, table.key, next(c for c in table.cells if c.row == row), budget)
        ylabel = "top-1 accuracy (%)" if metric == "top1_err" else "mAP (%)"
        hint = "Market-1501 needs data/market1501" if "market1501" in table.key else ""
        _lines(ax, xs, {"mean over the cohort": means, "best network": bests}, "cohort size K", ylabel, paper.key,
               hint)
        ax.set_title(table.title.split(":")[0], fontsize=9)
    fig.suptitle(figure_title("DML: performance against cohort size", budget, used), fontsize=9)
    save(fig, path)


def draw_dmle(paper, rows, budget, curves, path):
    """Cohort-mean accuracy of DML and DML_e against K (DML_e runs are their own; DML's the cohort's)."""
    from matplotlib.figure import Figure


    fig = Figure(figsize=(5.6, 4.0), layout="constrained")
    ax = fig.add_subplot()
    table = next(t for t in paper.tables if t.key == "dml_vs_dmle")
    series: dict[str, list[float]] = {"DML": [], "DML_e": []}
    xs: dict[str, list[int]] = {"DML": [], "DML_e": []}
    used = []
    for cell in table.cells:
        found = _finished(rows, table.key, cell, budget)
        if not found:
            continue
        k = int(cell.row.split("=")[1])
        values = [_value(found[0], net_metric(i)) for i in range(1, k + 1)]
        values = [100.0 - v for v in values if v is not None]
        if values:
            xs[cell.col].append(k)
            series[cell.col].append(sum(values) / len(values))
            used.append(found[0])
    drawn = {name: (xs[name], ys) for name, ys in series.items() if ys}
    if drawn:
        for name, (x, y) in drawn.items():
            ax.plot(x, y, marker="o", label=name)
        ax.set_xlabel("cohort size K")
        ax.set_ylabel("mean top-1 accuracy over the cohort (%)")
        ax.set_xticks(list(DMLE_SIZES))
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    else:
        empty_panel(ax, paper.key)
    ax.set_title(figure_title(f"DML vs DML_e, CIFAR-100 {COHORT_CIFAR}", budget, used), fontsize=9)
    save(fig, path)


def draw_gains(paper, rows, budget, curves, path):
    """Table 2: DML - Independent accuracy gain per network, ours against the paper's."""
    from matplotlib.figure import Figure


    table = next(t for t in paper.tables if t.key == "table2")
    refs = load_references(paper.key)
    labels, ours, theirs, used = [], [], [], []
    for row in table.rows:
        for net in ("net1", "net2"):
            ind, dml = (next(c for c in table.cells if c.row == row and c.col == f"{kind} {net}")
                        for kind in ("Independent", "DML"))
            means = []
            for cell in (ind, dml):
                found = _finished(rows, table.key, cell, budget)
                values = [v for v in (_value(r, cell.metric) for r in found) if v is not None]
                means.append(sum(values) / len(values) if values else None)
                used += found
            paper_values = [refs.get((table.key, row, c.col), {}).get("value") for c in (ind, dml)]
            labels.append(f"{row.replace('Net1=', '').replace(', Net2=', '/')} {net}")
            ours.append(means[0] - means[1] if None not in means else None)  # error drop = accuracy gain
            theirs.append(paper_values[1] - paper_values[0] if None not in paper_values else None)
    fig = Figure(figsize=(11, 5.0), layout="constrained")
    ax = fig.add_subplot()
    if any(v is not None for v in ours):
        x = range(len(labels))
        nan = float("nan")  # a missing value draws no bar
        ax.bar([i - 0.2 for i in x], [nan if v is None else v for v in ours], width=0.4, label="ours")
        ax.bar([i + 0.2 for i in x], [nan if v is None else v for v in theirs], width=0.4,
               label="paper (from its accuracies)")
        ax.set_xticks(list(x))
        ax.set_xticklabels(labels, fontsize=7, rotation=35, ha="right")
        ax.axhline(0, color="0.3", lw=0.8)
        ax.set_ylabel("DML - Independent, top-1 accuracy (points)")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3, axis="y")
    else:
        empty_panel(ax, paper.key)
    ax.set_title(figure_title("Table 2: accuracy gain of DML over independent training", budget, used), fontsize=9)
    save(fig, path)


def _lines(ax, xs, series: dict[str, list[float]], xlabel: str, ylabel: str, paper_key: str,
           hint: str = "") -> None:
    if not xs:
        empty_panel(ax, paper_key, hint)
        return
    for name, ys in series.items():
        ax.plot(xs, ys, marker="o", label=name)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_xticks(xs)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)


def paper() -> Paper:
    return Paper(
        key=KEY,
        title="Deep Mutual Learning",
        citation="Ying Zhang, Tao Xiang, Timothy M. Hospedales and Huchuan Lu, 'Deep Mutual Learning', CVPR 2018 "
                 "(arXiv 1706.00384)",
        tables=[table2(), table4("cifar100"), table4("market1501"), table3(), cohort_table("cifar100"),
                cohort_table("market1501"), dmle_table(), entropy_table(), update_order_table()],
        plots=[Plot("table2_gains", "Table 2: DML - Independent gains, ours vs the paper", draw_gains),
               Plot("cohort", "Accuracy / mAP against cohort size", draw_cohort),
               Plot("dml_vs_dmle", "DML vs DML_e against cohort size", draw_dmle)],
        protocol_notes=list(PROTOCOL_NOTES),
    )


__all__ = ["paper", "cifar", "market", "independent", "mutual", "distilled", "cohort", "net_metric", "KEY",
           "CIFAR_MODELS", "MARKET_MODELS", "TABLE2_PAIRS"]
