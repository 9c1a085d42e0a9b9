"""The layout's rules, checked on the source itself: one owner for the run directory's file
names, no import cycles (function-local imports included), `persyn.config` a leaf, and no
module too long to read."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
PACKAGE = SRC / "persyn"

# The modules that own the run directory's file names: `artifacts` every artifact, `store`
# its own markers and lock.
ARTIFACT_OWNERS = ("persyn/artifacts/", "persyn/store.py")
# The run directory's file names (see `persyn.artifacts`), and those of the folders
# `persyn evaluate`, `persyn experiment`, `persyn train` and `persyn report` write.
ARTIFACT_FILES = re.compile(
    r"(?<![\w.-])("
    r"prompts\.jsonl|calibration\.json|imported\.jsonl|rewards\.jsonl|rewards_meta\.json"
    r"|rewards_alpha|alpha_sweep\.(?:json|md)|router\.json|metrics\.json"
    r"|test_predictions\.jsonl|scores\.jsonl|routes\.jsonl|dataset\.jsonl|failed\.jsonl"
    r"|summary\.json|manifest\.json|config\.yaml|report\.html|eval\.(?:json|md)"
    r"|answers\.jsonl|per_prompt\.json|results\.(?:md|csv|png)|persyn_training\.json"
    r"|state\.json|demo_summary\.json|persyn_inputs\.json"
    r")(?![\w-])"
)
# Folder names are common words ("router" is also a config section; "student" is left out,
# the benches' scratch students live in one): they count where a path is built of them
# (`x / "router"`, `store.path("router", ...)`, "router/...").
ARTIFACT_FOLDERS = (
    "generations",
    "batches",
    "scores",
    "router",
    "dataset",
    "datasets",
    "report",
    "stages",
    "students",
    "final",
    "experiment",
    "eval",
)
FOLDER_IN_TEXT = re.compile(rf"(?<![\w.-])({'|'.join(ARTIFACT_FOLDERS)})/")
MAX_MODULE_LINES = 400


def _modules(*roots: Path) -> list[Path]:
    return sorted(p for root in roots for p in root.rglob("*.py"))


def _module_name(path: Path, src: Path) -> str:
    parts = list(path.relative_to(src).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _docstrings(tree: ast.AST) -> set[int]:
    """ids of the docstring nodes: prose, not paths."""
    return {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }


def _path_parts(tree: ast.AST) -> set[int]:
    """ids of the string constants a path is built of: `x / "name"`, and the arguments of
    `Path(...)`, `.path(...)` and `.joinpath(...)`."""
    parts: list[ast.AST] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):
            parts += [node.left, node.right]
        elif isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name in {"Path", "path", "joinpath"}:
                parts += node.args
    return {id(p) for p in parts}


def artifact_names(path: Path) -> list[tuple[int, str]]:
    """(line, text) of each string constant in `path` naming a run-directory file or
    folder, the literal parts of f-strings included. Prose (a help text, a message: a
    string with a space) may mention a file for its reader; code may not build its path."""
    tree = ast.parse(path.read_text(), str(path))
    docstrings, path_parts = _docstrings(tree), _path_parts(tree)
    return [
        (node.lineno, node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and id(node) not in docstrings
        and not any(c.isspace() for c in node.value)
        and (
            ARTIFACT_FILES.search(node.value)
            or FOLDER_IN_TEXT.search(node.value)
            or (id(node) in path_parts and node.value in ARTIFACT_FOLDERS)
        )
    ]


def test_artifact_names_finds_paths_not_prose(tmp_path: Path):
    module = tmp_path / "module.py"
    module.write_text(
        "def f(store, d, x):\n"
        '    """Reads router/metrics.json."""\n'
        '    a = store.path("router", "metrics.json")\n'
        '    b = f"{d}/eval.md"\n'
        '    c = x / "generations"\n'
        '    help_text = "writes summary.json and dataset/"\n'
        '    return {"router": a, "scores": [b, c]}\n'
    )
    found = [line for line, _text in artifact_names(module)]
    assert sorted(found) == [3, 3, 4, 5]


def test_only_artifacts_and_store_name_run_directory_files():
    found = [
        f"{path.relative_to(ROOT)}:{line}: {text!r}"
        for path in _modules(PACKAGE, ROOT / "bench")
        if not any(owner in path.relative_to(ROOT).as_posix() for owner in ARTIFACT_OWNERS)
        for line, text in sorted(artifact_names(path))
    ]
    assert not found, "run-directory file names outside persyn.artifacts:\n" + "\n".join(found)


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    """The absolute module an `ImportFrom` names (relative imports resolved)."""
    if node.level == 0:
        return node.module or ""
    package = module.split(".") if is_package else module.split(".")[:-1]
    base = package[: len(package) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def import_graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    """Module -> the modules of `package` it imports, from every import statement (module
    level, inside functions, under `TYPE_CHECKING`). `import a.b` is an edge to `a.b`;
    `from a import b` is an edge to `a.b` where that is a module, else to `a` (its
    `__init__`, which may import its submodules in turn)."""
    paths = {_module_name(p, package.parent): p for p in _modules(package)}
    graph: dict[str, set[str]] = {}
    for module, path in paths.items():
        edges: set[str] = set()
        is_package = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                edges.update(a.name for a in node.names if a.name in paths)
            elif isinstance(node, ast.ImportFrom):
                target = _resolve(module, is_package, node)
                for alias in node.names:
                    sub = f"{target}.{alias.name}"
                    edges.add(sub if sub in paths else target)
        graph[module] = {e for e in edges if e in paths and e != module}
    return graph


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of `graph` as [a, b, ..., a], or None (depth-first, three colours)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: finished
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def test_import_graph_counts_local_and_relative_imports(tmp_path: Path):
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("from pkg.sub import b\n")
    (package / "a.py").write_text("def f():\n    from .sub import b\n")
    (package / "sub" / "__init__.py").write_text("")
    (package / "sub" / "b.py").write_text("import pkg.c\n")
    (package / "c.py").write_text("from pkg import a\n")
    graph = import_graph(package)
    assert graph["pkg"] == {"pkg.sub.b"}
    assert graph["pkg.a"] == {"pkg.sub.b"}
    cycle = _find_cycle(graph)
    assert cycle == ["pkg.sub.b", "pkg.c", "pkg.a", "pkg.sub.b"]
    (package / "c.py").write_text("")
    assert _find_cycle(import_graph(package)) is None


def test_import_graph_has_no_cycle():
    cycle = _find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_config_imports_nothing_of_persyn_outside_itself():
    outside = {
        f"{module} -> {target}"
        for module, targets in import_graph().items()
        if module == "persyn.config" or module.startswith("persyn.config.")
        for target in targets
        if target != "persyn.config" and not target.startswith("persyn.config.")
    }
    assert not outside, "persyn.config must be a leaf:\n" + "\n".join(sorted(outside))


def test_no_module_is_too_long():
    long = [
        f"{p.relative_to(ROOT)}: {n} lines"
        for p in _modules(PACKAGE)
        if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES
    ]
    assert not long, f"modules over {MAX_MODULE_LINES} lines:\n" + "\n".join(long)


def test_pipeline_is_the_stage_table_and_little_else():
    assert len((PACKAGE / "pipeline.py").read_text().splitlines()) <= 200
