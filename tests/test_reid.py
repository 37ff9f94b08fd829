"""Market-1501 loading and the re-ID metrics (CMC rank-k, mAP) on hand-checked cases."""
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from kd_methods.data import DataConfig, build_data, get_spec
from kd_methods.data.market1501 import load_market1501, parse_name
from kd_methods.errors import DataMissing
from kd_methods.eval_reid import average_precision, evaluate_rankings, evaluate_reid, pairwise_distances

# Gallery of the hand-made case: (person id, camera).
GALLERY = [(1, 1),    # g0: the query's id and camera -> junk
           (2, 2),    # g1: another person -> negative (and the good match of query 1)
           (1, 2),    # g2: good match of query 0
           (-1, 3),   # g3: junk box
           (0, 2),    # g4: distractor -> negative
           (1, 3),    # g5: good match of query 0
           (3, 1)]    # g6: query 2's id, but only from query 2's camera -> query 2 has no good match
QUERIES = [(1, 1), (2, 1), (3, 1)]
DIST = np.array([[0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7],    # ranking without junk: g1 g2 g4 g5 g6
                 [0.9, 0.1, 0.8, 0.7, 0.6, 0.5, 0.4],    # g1 first: a hit at rank 1
                 [0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.0]])


def ids_cams(pairs):
    return [p for p, _ in pairs], [c for _, c in pairs]


def rankings(interpolation="trapezoid"):
    q_ids, q_cams = ids_cams(QUERIES)
    g_ids, g_cams = ids_cams(GALLERY)
    return evaluate_rankings(DIST, q_ids, q_cams, g_ids, g_cams, ranks=(1, 2, 5), interpolation=interpolation)


def test_market_protocol_on_a_hand_made_distance_matrix():
    # Query 0, junk removed: [neg, good, neg, good, neg]: first hit at rank 2.
    # Official AP: hits at 0-based ranks 1 and 3: (0/1 + 1/2)/2 and (1/3 + 2/4)/2, averaged: 1/3.
    # Query 1: hit at rank 1, AP 1. Query 2: no good match -> skipped.
    out = rankings()
    assert out["valid_queries"] == 2
    assert out["rank1"] == pytest.approx(50.0)
    assert out["rank2"] == pytest.approx(100.0)
    assert out["rank5"] == pytest.approx(100.0)
    assert out["mAP"] == pytest.approx(100 * (1 / 3 + 1) / 2, abs=1e-3)


def test_non_interpolated_ap_is_the_mean_precision_at_the_hits():
    # Query 0: precisions 1/2 and 2/4 -> 0.5; query 1: 1.
    assert rankings("none")["mAP"] == pytest.approx(75.0)


def test_same_camera_matches_do_not_count():
    # If the same-camera image of the query's id were a valid match, query 0 would hit at rank 1.
    q_ids, q_cams = ids_cams(QUERIES[:1])
    g_ids, _ = ids_cams(GALLERY)
    other_cams = [9] * len(GALLERY)
    assert evaluate_rankings(DIST[:1], q_ids, q_cams, g_ids, other_cams)["rank1"] == 100.0
    assert rankings()["rank1"] == 50.0


@pytest.mark.parametrize("hits, trapezoid, plain", [
    ([True], 1.0, 1.0),
    ([True, True], 1.0, 1.0),
    ([False, True], 0.25, 0.5),
    ([True, False, True], (1 + (0.5 + 2 / 3) / 2) / 2, (1 + 2 / 3) / 2),
])
def test_average_precision_formulas(hits, trapezoid, plain):
    assert average_precision(np.array(hits)) == pytest.approx(trapezoid)
    assert average_precision(np.array(hits), "none") == pytest.approx(plain)


def test_bad_inputs_are_rejected():
    with pytest.raises(ValueError, match="at least one good match"):
        average_precision(np.array([False, False]))
    with pytest.raises(ValueError, match="interpolation"):
        average_precision(np.array([True]), "linear")
    with pytest.raises(ValueError, match="does not fit"):
        evaluate_rankings(DIST[:, :3], *ids_cams(QUERIES), *ids_cams(GALLERY))
    with pytest.raises(ValueError, match="no query has a good match"):
        evaluate_rankings(DIST[2:], [3], [1], *ids_cams(GALLERY))


def test_pairwise_distances_are_euclidean():
    q = torch.tensor([[0.0, 0.0], [3.0, 4.0]])
    g = torch.tensor([[0.0, 0.0], [0.0, 1.0]])
    assert torch.allclose(pairwise_distances(q, g), torch.tensor([[0.0, 1.0], [5.0, 18 ** 0.5]]))
    with pytest.raises(ValueError):
        pairwise_distances(q, torch.zeros(2, 3))


class _Embed(torch.nn.Module):
    """timm-style toy model whose pre-logit feature is the image's mean colour."""

    def forward_features(self, x):
        return x

    def forward_head(self, x, pre_logits=False):
        return x.mean(dim=(2, 3))


def test_evaluate_reid_matches_by_pooled_features():
    colours = {1: 0.0, 2: 5.0}
    def batch(pairs):
        images = torch.stack([torch.full((3, 4, 2), colours[p] + 0.01 * c) for p, c in pairs])
        return [(images, torch.zeros(len(pairs)))]
    query, gallery = [(1, 1), (2, 1)], [(2, 2), (1, 2), (1, 1)]
    out = evaluate_reid(_Embed(), batch(query), batch(gallery), *ids_cams(query), *ids_cams(gallery))
    assert out["rank1"] == 100.0 and out["mAP"] == 100.0


def write_market(root: Path, files: dict[str, list[str]]) -> Path:
    for split, names in files.items():
        folder = root / "market1501" / split
        folder.mkdir(parents=True, exist_ok=True)
        for i, name in enumerate(names):
            Image.new("RGB", (64, 128), (i * 40 % 256, 80, 160)).save(folder / name)
    return root


TREE = {
    "bounding_box_train": ["0002_c1s1_000451_03.jpg", "0002_c2s1_000301_01.jpg", "0007_c3s3_076119_02.jpg",
                           "0007_c1s4_001001_01.jpg", "-1_c1s1_000401_03.jpg", "0000_c6s1_009876_05.jpg"],
    "bounding_box_test": ["0003_c2s1_000151_01.jpg", "-1_c1s1_000401_04.jpg", "0000_c3s1_000001_02.jpg"],
    "query": ["0003_c1s1_000151_01.jpg"],
}


def test_file_names_give_person_and_camera():
    assert parse_name("0002_c1s1_000451_03.jpg") == (2, 1)
    assert parse_name("/x/-1_c5s2_001_01.jpg") == (-1, 5)
    assert parse_name("0000_c6s1_009876_05.jpg") == (0, 6)
    with pytest.raises(ValueError, match="not a Market-1501 image name"):
        parse_name("Thumbs.db")


def test_market_tree_loads_with_relabelled_training_ids(tmp_path):
    data = load_market1501(write_market(tmp_path, TREE))
    assert data.num_classes == 2 and data.train_pids == [2, 7]
    assert sorted(label for _, label in data.train) == [0, 0, 1, 1]   # junk and distractor left out
    assert [(im.pid, im.camid) for im in data.query] == [(3, 1)]
    assert sorted((im.pid, im.camid) for im in data.gallery) == [(-1, 1), (0, 3), (3, 2)]


def test_market_registry_entry_builds_loaders(tmp_path):
    write_market(tmp_path, TREE)
    assert get_spec("market1501").num_classes is None
    bundle = build_data(DataConfig("market1501", root=str(tmp_path), batch_size=2, num_workers=0))
    assert bundle.num_classes == 2 and bundle.n_train == 4
    images, targets = next(iter(bundle.train))
    assert images.shape[0] == 2 and images.dtype == torch.float32 and set(targets.tolist()) <= {0, 1}


def test_missing_market_says_where_and_how(tmp_path):
    with pytest.raises(DataMissing, match="no bounding_box_train/"):
        load_market1501(tmp_path)
    write_market(tmp_path, {**TREE, "query": []})
    with pytest.raises(DataMissing, match="query/ .* no usable"):
        load_market1501(tmp_path)


# -- the engine scores re-ID runs ------------------------------------------------------------------
RUN_TREE = {
    "bounding_box_train": [f"{pid:04d}_c{cam}s1_00{k}001_01.jpg" for pid in (2, 7, 9) for cam in (1, 2)
                           for k in range(2)],
    "bounding_box_test": ["0003_c2s1_000151_01.jpg", "0004_c1s1_000152_01.jpg", "0003_c1s1_000153_01.jpg",
                          "0000_c3s1_000001_02.jpg", "-1_c1s1_000401_04.jpg"],
    "query": ["0003_c1s1_000151_01.jpg", "0004_c3s1_000151_01.jpg"],
}


def test_a_market_run_records_rank1_and_map_of_every_peer_after_its_last_epoch(tmp_path):
    """A 2-peer DML run on a Market-1501 tree: rank-1/mAP of both peers land in the last metrics row
    (not before), result.json and runs.csv, and equal a direct evaluation of the saved networks."""
    import csv
    import json

    from kd_methods.engine.trainer import EngineOptions
    from kd_methods.runs.runner import RunContext, execute, load_run_model
    from kd_methods.runs.spec import ExperimentSpec, Optim, Phase, resolve
    from kd_methods.runs.store import RunStore, read_results

    write_market(tmp_path, RUN_TREE)
    spec = ExperimentSpec(model="cifar_resnet8", method="dml", method_args=dict(peers=["cifar_resnet8"]),
                          dataset="market1501", batch_size=4, train=Phase(length=2, optim=Optim(lr=0.01)),
                          paper="unit", table="t", label="dml")
    cfg = resolve(spec, data_root=str(tmp_path))
    store = RunStore(tmp_path / "runs")
    result = execute(cfg, RunContext(store=store, results_dir=tmp_path / "results",
                                     opts=EngineOptions(device="cpu", progress=False), log=lambda m: None))
    with open(tmp_path / "runs" / cfg["run_id"] / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 and rows[0]["mAP"] == "" and rows[1]["mAP"] != ""
    for key in ("rank1", "rank5", "mAP", "net2_rank1", "net2_mAP"):
        assert key in result["extra"], key
    (row,) = read_results(tmp_path / "results" / "unit" / "runs.csv")
    assert json.loads(row["extra"])["mAP"] == result["extra"]["mAP"]

    splits = build_data(DataConfig("market1501", root=str(tmp_path), batch_size=4, num_workers=0)).retrieval
    assert splits.query_ids == [3, 4] and splits.gallery_cams == [1, 3, 1, 2, 1]  # sorted file names
    for name, prefix in (("net1", ""), ("net2", "net2_")):
        model = load_run_model(cfg, store, name)
        direct = evaluate_reid(model, splits.query, splits.gallery, splits.query_ids, splits.query_cams,
                               splits.gallery_ids, splits.gallery_cams)
        assert result["extra"][f"{prefix}mAP"] == pytest.approx(direct["mAP"])
        assert result["extra"][f"{prefix}rank1"] == pytest.approx(direct["rank1"])
