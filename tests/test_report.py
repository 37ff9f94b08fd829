"""Reports: the assumed-values table follows what each cell actually trains with."""
from benchmarks import dml, tsd
from kd_methods.methods import METHODS
from kd_methods.report.markdown import render_table_markdown


def _assumed_section(paper, table_key: str) -> list[str]:
    table = next(t for t in paper.tables if t.key == table_key)
    text = render_table_markdown(paper, table, {}, {}, None)
    return text.split("## Assumed values and deviations")[1].strip().splitlines()


def test_a_cells_method_args_show_as_config_values_beside_the_defaults_of_other_cells():
    """DML Table 4's '1 distills 2' trains kd at T = 1: the report says so instead of kd's default T."""
    lines = _assumed_section(dml.paper(), "table4_cifar100")
    kd_t = [line for line in lines if line.startswith("| kd | temperature |")]
    default_t = METHODS.get("kd").defaults["temperature"].value
    assert len(kd_t) == 1 and "| 1.0 | config |" in kd_t[0] and f"default {default_t!r}" in kd_t[0]
    assert any(line.startswith("| dml |") for line in lines)  # the other cells' method


def test_teachers_methods_are_listed_too():
    """A TSD generation student's table also lists its patriarch's assumed values (the tolerant method)."""
    lines = _assumed_section(tsd.paper(), tsd.paper().tables[0].key)
    assert any(line.startswith("| tolerant |") for line in lines)
    assert len(lines) == len(set(lines))  # each row once, however many cells share it


def test_a_reference_the_paper_cannot_have_is_not_called_untranscribed():
    """DML reports one update order only: the other order's cells say there is no paper value."""
    from kd_methods.report.markdown import format_cell

    cell = next(c for c in dml.update_order_table().cells if c.row.startswith("simultaneous"))
    summary = dict(cell=cell, n=0, reason="not run", mean=None, std=None)
    none = dict(value=None, note="the paper reports only its own order (Algorithm 1); no value exists")
    assert "none (see the notes)" in format_cell(summary, none, "top1_acc", None)
    assert "not transcribed" in format_cell(summary, dict(none, note="paper value not transcribed"), "top1_acc", None)
    assert "not transcribed" in format_cell(summary, None, "top1_acc", None)
