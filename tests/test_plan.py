"""`kd-bench plan`: FLOPs against hand-computed counts, the images a budget trains on, teachers' forwards
included, run statuses read from run folders, the critical path, and a command that writes nothing."""
import json

import pytest
import torch
from torch import nn

from kd_methods.cli import main
from kd_methods.engine.flops import count_flops
from kd_methods.models import create_model
from kd_methods.runs import cost
from kd_methods.runs.graph import Node, RunGraph
from kd_methods.runs.spec import ExperimentSpec, Optim, Phase, resolve


@pytest.mark.parametrize("groups", [1, 4])
def test_convolution_flops_by_hand_forward_and_backward(groups):
    conv = nn.Conv2d(16, 8, 3, padding=1, groups=groups, bias=False)
    x = torch.randn(2, 16, 5, 5, requires_grad=True)
    forward = 2 * 2 * 8 * (16 // groups) * 3 * 3 * 5 * 5  # 2 FLOPs per MAC, N x Cout x Cin/g x k^2 x H x W
    assert count_flops(lambda: conv(x)) == forward
    y = conv(x)
    # input gradient and weight gradient: one forward's worth each (the group count divides both)
    assert count_flops(lambda: y.sum().backward()) == 2 * forward


def test_a_teachers_forward_under_inference_mode_is_counted():
    linear = nn.Linear(10, 5)
    x = torch.randn(3, 10)

    def teacher():
        with torch.inference_mode():
            linear(x)
    assert count_flops(teacher) == 2 * 3 * 10 * 5


def spec(method="scratch", teachers=(), epochs=3, model="cifar_resnet8"):
    return ExperimentSpec(model=model, method=method, teachers=list(teachers), dataset="synthetic10", batch_size=16,
                          train_subset=64, test_subset=32, train=Phase(epochs, "epoch", Optim(lr=0.05)))


def per_image(step, batch=2) -> float:
    return count_flops(step) / batch


def test_a_runs_flops_are_its_steps_images_and_evaluations():
    cfg = resolve(spec(epochs=3), "paper")
    c = cost.Costs().run(cfg)
    torch.manual_seed(0)
    net = create_model("cifar_resnet8", 10)
    x, y = torch.randn(2, 3, 32, 32), torch.tensor([0, 1])
    train = per_image(lambda: nn.functional.cross_entropy(net(x), y).backward())
    with torch.inference_mode():
        evaluate = per_image(lambda: net(x))
    assert [(s.name, s.steps, s.images) for s in c.stages] == [("train", 12, 192)]  # 64 // 16 = 4 steps x 3
    assert c.stages[0].flops_per_image == train and c.eval_flops_per_image == evaluate
    assert c.flops == 192 * train + 3 * 32 * evaluate  # every epoch evaluates the 32 test images
    assert (c.epochs, c.train_images, c.test_images) == (3, 64, 32)


def test_a_students_step_includes_its_teachers_forward():
    teacher = spec(model="cifar_resnet14")
    costs = cost.Costs()
    student = costs.step_flops(resolve(spec(), "paper"))[0]["train"]
    kd = costs.step_flops(resolve(spec(method="kd", teachers=[teacher, teacher]), "paper"))[0]["train"]
    teacher_forward = costs.step_flops(resolve(teacher, "paper"))[1]  # its eval forward per image
    assert kd == pytest.approx(student + 2 * teacher_forward, rel=0, abs=1)  # the KD loss adds no matmul


def test_fake_tensors_count_what_real_ones_do():
    cfg = resolve(spec(method="at", teachers=[spec(model="cifar_resnet14")]), "paper")
    size = (3, 32, 32)
    assert cost._count_with(cfg, size, fake=True) == cost._count_with(cfg, size, fake=False)


def test_the_longest_chain_of_work():
    graph = RunGraph()
    for run_id, deps in [("a", []), ("b", ["a"]), ("c", []), ("d", ["b", "c"]), ("e", [])]:
        graph.nodes[run_id] = Node({}, deps)
    work = dict(a=1.0, b=2.0, c=5.0, d=1.0, e=6.5)
    assert graph.longest_path(work.__getitem__) == (["e"], 6.5)
    work["a"] = 4.0  # a -> b -> d = 7 now beats e
    assert graph.longest_path(work.__getitem__) == (["a", "b", "d"], 7.0)


def test_gpu_utilisation_is_measured_where_the_bench_measured_it(tmp_path):
    csv = tmp_path / "bench.csv"
    csv.write_text("name,device,batch,mfu\ngpu resnet56,NVIDIA H100 80GB HBM3,512,0.1200\n"
                   "gpu wrn28_10,NVIDIA A100-SXM4-80GB,256,0.5000\n")
    h100 = cost.gpu("H100", bench_csv=csv)
    assert h100.peak == 989e12 and h100.util("cifar_resnet56") == (0.12, True)
    assert h100.util("cifar_wrn_28_10") == (cost.ASSUMED_GPU_UTIL, False)  # measured on another GPU only
    assert h100.seconds("cifar_resnet56", 989e12 * 0.12) == pytest.approx(1.0)
    assert cost.gpu("H100", util=0.5, bench_csv=csv).util("cifar_resnet56") == (0.5, False)


ARGS = ["plan", "fitnets", "--tables", "table4", "--budget", "smoke", "--no-measure"]


def test_plan_lists_every_run_with_its_teachers_and_writes_nothing(workdir, capsys):
    assert main(ARGS + ["--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert list(workdir.iterdir()) == []  # no runs/, no results/
    runs = {r["run_id"]: r for r in plan["runs"]}
    teacher = next(r for r in runs.values() if r["model"] == "fitnets_mnist_teacher")
    students = [r for r in runs.values() if r["teachers"]]  # KD and HT + KD (the two scratch rows have none)
    assert len(runs) == 5 and {r["status"] for r in runs.values()} == {"new"} and len(students) == 2
    assert students and all(r["waits_on"] == [teacher["run_id"]] for r in students)
    assert plan["totals"]["flops"] == pytest.approx(sum(r["flops"] for r in runs.values()))
    assert plan["critical_path"]["runs"][0] == teacher["run_id"] and len(plan["critical_path"]["runs"]) == 2
    assert plan["gpu"]["measured_util"] == {} and plan["gpu"]["assumed_util"] == cost.ASSUMED_GPU_UTIL

    assert main(ARGS) == 0
    text = capsys.readouterr().out
    assert all(run_id in text for run_id in runs) and "critical path" in text and "(an assumption" in text


def test_plan_reads_where_each_run_stands(workdir, capsys):
    assert main(ARGS + ["--json"]) == 0
    runs = {r["run_id"]: r for r in json.loads(capsys.readouterr().out)["runs"]}
    teacher = next(r for r in runs.values() if not r["teachers"])
    student = next(r for r in runs.values() if r["method"] == "fitnets")  # 2 epochs: hint stage, then KD
    done = workdir / "runs" / teacher["run_id"]
    done.mkdir(parents=True)
    (done / "result.json").write_text("{}")
    half = workdir / "runs" / student["run_id"]
    half.mkdir()
    (half / "last.pt").write_bytes(b"")
    (half / "metrics.csv").write_text("epoch,stage\n1,hint\n")

    assert main(ARGS + ["--json"]) == 0
    after = {r["run_id"]: r for r in json.loads(capsys.readouterr().out)["runs"]}
    assert after[teacher["run_id"]]["status"] == "finished" and after[teacher["run_id"]]["flops_left"] == 0
    s = after[student["run_id"]]
    assert (s["status"], s["epochs_done"], s["epochs"], s["waits_on"]) == ("resumable", 1, 2, [])
    assert s["flops_left"] == pytest.approx(s["flops"] / 2)


def test_an_unknown_table_is_bad_input(workdir, capsys):
    assert main(["plan", "fitnets", "--tables", "tabel4", "--no-measure"]) == 2
    err = capsys.readouterr().err.strip()
    assert "no table 'tabel4' (did you mean 'table4'?)" in err and len(err.splitlines()) == 1


def test_every_dataset_has_the_split_sizes_a_plan_needs():
    from kd_methods.data import DATASETS
    assert set(DATASETS) <= set(cost.SPLIT_SIZES)
