"""Imports flow one way: `benchmarks` uses `kd_methods`, never the reverse (DESIGN.md). The library takes a
paper as data; only the command line, the application's entry point, names the paper catalogue."""
import ast
from pathlib import Path

import kd_methods

PACKAGE = Path(kd_methods.__file__).parent
ENTRY_POINT = PACKAGE / "cli.py"


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports, at its top or inside a function (absolute names)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


def test_the_library_never_imports_the_benchmarks():
    offenders = {str(p.relative_to(PACKAGE.parent)): sorted(m for m in imported_modules(p)
                                                             if m.split(".")[0] == "benchmarks")
                 for p in PACKAGE.rglob("*.py") if p != ENTRY_POINT}
    assert {k: v for k, v in offenders.items() if v} == {}


def test_the_check_sees_imports_inside_functions(tmp_path):
    f = tmp_path / "m.py"
    f.write_text("def f():\n    from benchmarks.core import plan\n    import benchmarks\n")
    assert imported_modules(f) == {"benchmarks.core", "benchmarks"}
