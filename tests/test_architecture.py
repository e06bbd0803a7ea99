"""The package's shape: no import cycles, data flowing one way between stages, small modules, a lazy public API."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "clipface"

#: The one table of stages, in the order data flows (the README's layout table says the same): a module may
#: import from its own stage or an earlier one only. Stage 0 holds what every stage may use.
LAYER = {
    "errors": 0,
    "textsafe": 0,
    "sql": 0,
    "files": 0,
    "versions": 0,
    "assets": 0,
    "data": 1,
    "models": 2,
    "embed": 3,
    "cloak": 4,
    "eval": 5,
    "report": 6,
    "index": 7,
    "audit": 8,
    "server": 9,
    "facade": 10,
    "jobs": 10,
    "cli": 11,
}
#: Longest function body, in lines, not counting the functions and classes defined inside it (a FastAPI app
#: factory's routes are measured one by one). A hard limit: a function this long is doing several things.
MAX_FUNCTION_LINES = 140
#: A module over this many lines gets a warning, not a failure: the design, not a counter, says where a file ends.
MODULE_WARN_LINES = 500


def module_name(path: Path) -> str:
    rel = path.relative_to(SRC).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in PACKAGE.rglob("*.py") if "bundled" not in p.parts}


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """clipface modules imported anywhere in the file (top level, functions, TYPE_CHECKING blocks)."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:  # "from pkg import module" imports that module
                sub = f"{target}.{alias.name}"
                found.add(sub if sub in known else target)
    return {m for m in found if m in known and m != name}


def graph() -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    return {name: imports_of(name, path, known) for name, path in mods.items()}


def stage(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def test_no_import_cycles() -> None:
    g = graph()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    counter = [0]
    sys.setrecursionlimit(max(10_000, sys.getrecursionlimit()))

    def strongconnect(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in g[v]:
            if w not in index:
                strongconnect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in g:
        if v not in index:
            strongconnect(v)
    assert not cycles, f"import cycles: {cycles}"


def test_detector_finds_a_planted_cycle(tmp_path: Path) -> None:
    """The cycle test can fail: two modules importing each other inside functions are found."""
    a, b = tmp_path / "a.py", tmp_path / "b.py"
    a.write_text("def f():\n    from .b import g\n")
    b.write_text("from . import a\n")
    known = {"pkg.a", "pkg.b"}
    assert imports_of("pkg.a", a, known) == {"pkg.b"} and imports_of("pkg.b", b, known) == {"pkg.a"}


def test_data_flows_one_way() -> None:
    bad = []
    for module, deps in graph().items():
        if module in ("clipface", "clipface.__main__"):
            continue
        for dep in deps:
            if dep == "clipface":
                bad.append(f"{module} imports the package root")
            elif LAYER[stage(dep)] > LAYER[stage(module)]:
                bad.append(f"{module} ({stage(module)}) imports {dep} ({stage(dep)}), a later stage")
    assert not bad, "\n".join(bad)


def own_lines(node: ast.AST) -> int:
    """Lines of a function, less those of the functions and classes defined inside it (measured on their own)."""
    inner = 0

    def visit(n: ast.AST) -> None:
        nonlocal inner
        for child in ast.iter_child_nodes(n):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                inner += child.end_lineno - child.lineno + 1 + len(child.decorator_list)  # type: ignore[operator]
            else:
                visit(child)

    visit(node)
    return node.end_lineno - node.lineno + 1 - inner  # type: ignore[attr-defined,operator]


def long_functions(source: str, limit: int) -> list[tuple[str, int]]:
    tree = ast.parse(source)
    return [
        (n.name, own_lines(n))
        for n in ast.walk(tree)
        if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and own_lines(n) > limit
    ]


def test_functions_are_short() -> None:
    long = {
        name: found
        for name, path in modules().items()
        if (found := long_functions(path.read_text(), MAX_FUNCTION_LINES))
    }
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines: {long}"
    big = {name: n for name, path in modules().items() if (n := len(path.read_text().splitlines())) > MODULE_WARN_LINES}
    if big:
        import warnings

        warnings.warn(
            f"modules over {MODULE_WARN_LINES} lines (split where the design has a seam): {big}", stacklevel=1
        )


def test_function_length_counts_nested_definitions_apart() -> None:
    """The length test can fail, and measures a factory's inner routes on their own."""
    body = "".join(f"        x{i} = {i}\n" for i in range(30))
    source = f"def outer():\n    def inner():\n{body}        return 1\n    return inner\n"
    assert long_functions(source, 25) == [("inner", 32)]
    assert own_lines(ast.parse(source).body[0]) == 2


def test_import_is_light_and_exports_resolve() -> None:
    code = (
        "import sys, clipface\n"
        "assert 'torch' not in sys.modules and 'transformers' not in sys.modules, 'import clipface loaded a model "
        "library'\n"
        "missing = [n for n in clipface.__all__ if not hasattr(clipface, n)]\n"
        "assert not missing, missing\n"
        "print(len(clipface.__all__))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert int(proc.stdout) >= 25


@pytest.mark.parametrize(
    "name",
    [
        "create_encoder",
        "list_models",
        "FaceDataset",
        "EmbeddingCache",
        "RunOptions",
        "zeroshot",
        "verification",
        "gallery",
        "FaceIndex",
        "cloak_folder",
        "represent",
        "verify",
        "find",
    ],
)
def test_readme_api_is_exported(name: str) -> None:
    import clipface

    assert name in clipface.__all__ and callable(getattr(clipface, name))


def test_readme_layout_table_is_this_table() -> None:
    """The README's table of stages numbers each sub-package as :data:`LAYER` does, and names every stage."""
    readme = (SRC.parent / "README.md").read_text(encoding="utf-8")
    told: dict[str, int] = {}
    for number, packages in re.findall(r"^\| (\d+) [^|]*\| ([^|]*) \|", readme, flags=re.M):
        for name in re.findall(r"`clipface\.(\w+)`", packages):
            told[name] = int(number)
    assert told == {name: layer for name, layer in LAYER.items() if layer > 0}
