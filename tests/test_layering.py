"""The layering rule, checked: promotion/ is the pure core.

Walks every promotion/*.py with ``ast`` (nothing is imported, so a violation cannot hide behind an
import error): a module-level import of the Prefect layer (flows/, tasks/, blocks/) fails, and so
does a module-level import of Prefect itself (every command loading that module would pay
Prefect's ~2.4 s import, and the S3-only commands must not import it; tests/promotion/test_cli.py
runs them and checks ``sys.modules``). Imports inside functions are lazy and allowed, of the
Prefect layer only in the seams listed below. ``if TYPE_CHECKING:`` imports count as module level:
they tie the core's types to the layer above it.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CORE = REPO / "promotion"
PREFECT_LAYER = ("flows", "tasks", "blocks")

#: The only core modules that may import the Prefect layer (lazily, inside a function), and why.
SEAMS = {
    # `promote run/rollback/setup/sweep/serve` start or serve flows: the CLI is the one seam.
    "promotion/cli.py": "the CLI's Prefect commands import the flows they run when they run",
}


@dataclass(frozen=True)
class Import:
    module: str  # "promotion/cli.py"
    line: int
    name: str  # the imported module, e.g. "flows.pipeline"
    lazy: bool  # inside a function (runs when called, not when the module loads)
    type_only: bool = False  # under ``if TYPE_CHECKING:`` (never runs)

    def __str__(self) -> str:
        where = "inside a function" if self.lazy else "at module level"
        where += " (TYPE_CHECKING)" if self.type_only else ""
        return f"{self.module}:{self.line} imports {self.name} {where}"


def _imported_names(node: ast.AST, module: str) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if isinstance(node, ast.ImportFrom):
        if node.level:  # relative: ``from . import x`` inside promotion/ stays inside it
            base = ".".join([*module.removesuffix(".py").split("/")[: -node.level], *[node.module or ""]])
            base = base.rstrip(".")
            return [base] if node.module else [f"{base}.{alias.name}" for alias in node.names]
        return [node.module or ""]
    if (  # importlib.import_module("flows.x") / __import__("flows.x"): an import all the same
        isinstance(node, ast.Call)
        and (
            (isinstance(node.func, ast.Attribute) and node.func.attr == "import_module")
            or (isinstance(node.func, ast.Name) and node.func.id in ("import_module", "__import__"))
        )
        and node.args
    ):
        first = node.args[0]
        return [first.value] if isinstance(first, ast.Constant) and isinstance(first.value, str) else ["?"]
    return []


def imports(path: Path, root: Path = REPO) -> list[Import]:
    """Every import in ``path``, each marked lazy when a function (or lambda) encloses it."""
    module = path.relative_to(root).as_posix()
    found: list[Import] = []

    def walk(node: ast.AST, lazy: bool, type_only: bool) -> None:
        for name in _imported_names(node, module):
            found.append(Import(module, getattr(node, "lineno", 0), name, lazy, type_only))
        inner = lazy or isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            walk(node.test, inner, type_only)
            for statement in node.body:
                walk(statement, inner, True)
            for statement in node.orelse:
                walk(statement, inner, type_only)
            return
        for child in ast.iter_child_nodes(node):
            walk(child, inner, type_only)

    walk(ast.parse(path.read_text(), filename=str(path)), lazy=False, type_only=False)
    return found


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _top(name: str) -> str:
    return name.partition(".")[0]


def core_imports() -> list[Import]:
    return [i for path in sorted(CORE.rglob("*.py")) for i in imports(path)]


def test_the_core_never_imports_the_prefect_layer_at_module_level() -> None:
    bad = [str(i) for i in core_imports() if _top(i.name) in PREFECT_LAYER and not i.lazy]
    assert bad == [], "promotion/ is the pure core:\n" + "\n".join(bad)


def test_lazy_imports_of_the_prefect_layer_are_only_in_the_seams() -> None:
    bad = [
        str(i) for i in core_imports() if _top(i.name) in PREFECT_LAYER and i.lazy and i.module not in SEAMS
    ]
    assert bad == [], f"only {sorted(SEAMS)} may import flows/tasks/blocks (lazily):\n" + "\n".join(bad)
    # A seam that no longer imports the layer is not a seam: keep the list honest.
    used = {i.module for i in core_imports() if _top(i.name) in PREFECT_LAYER}
    assert used == set(SEAMS)


def test_the_core_never_imports_prefect_at_module_level() -> None:
    # Type-only imports cost nothing at run time: annotations may name Prefect's classes.
    bad = [str(i) for i in core_imports() if _top(i.name) == "prefect" and not i.lazy and not i.type_only]
    assert bad == [], "import Prefect inside the function that needs it:\n" + "\n".join(bad)


def test_dynamic_imports_name_their_module() -> None:
    # A computed name would let the layer in unseen.
    assert [str(i) for i in core_imports() if i.name == "?"] == []


def test_the_walk_finds_what_it_must_refuse(tmp_path: Path) -> None:
    """The checks above pass only if the walk sees imports in every place they can hide."""
    sample = tmp_path / "promotion" / "sample.py"
    sample.parent.mkdir()
    sample.write_text(
        "from __future__ import annotations\n"
        "import importlib\n"
        "from typing import TYPE_CHECKING\n"
        "import flows.pipeline\n"  # 4
        "if TYPE_CHECKING:\n"
        "    from tasks import gates\n"  # 6
        "try:\n"
        "    from blocks.credentials import X\n"  # 8
        "except ImportError:\n"
        "    pass\n"
        "class C:\n"
        "    import prefect\n"  # 12: a class body runs when the module loads
        "    def m(self):\n"
        "        from flows import serve\n"  # 14
        "def f():\n"
        "    importlib.import_module('flows.sweep')\n"  # 16
        "    return __import__(name)\n"  # 17
        "g = lambda: __import__('tasks.gates')\n"  # 18
        "from . import digest\n"  # 19
    )
    seen = {(i.line, i.name, i.lazy, i.type_only) for i in imports(sample, root=tmp_path)}
    assert {
        (4, "flows.pipeline", False, False),
        (6, "tasks", False, True),
        (8, "blocks.credentials", False, False),
        (12, "prefect", False, False),
        (14, "flows", True, False),
        (16, "flows.sweep", True, False),
        (17, "?", True, False),
        (18, "tasks.gates", True, False),
        (19, "promotion.digest", False, False),
    } <= seen
