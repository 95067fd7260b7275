"""The public surface is pinned, `ragtune --help` imports nothing heavy, and the module graph is layered without cycles."""

from __future__ import annotations

import ast
import importlib.util
import subprocess
import sys
from pathlib import Path

import ragtune


def test_all_is_pinned():
    assert sorted(ragtune.__all__) == sorted(
        [
            "Ragtune",
            "Hit",
            "SearchResults",
            "RagtuneConfig",
            "RagtuneError",
            "ConfigError",
            "FeedbackError",
            "FeedbackConflictError",
            "InputError",
            "MissingDependencyError",
            "ModelError",
            "NotEnoughFeedbackError",
            "RefreshLockedError",
            "UnknownIdError",
            "WorkspaceError",
            "__version__",
        ]
    )
    for name in ragtune.__all__:
        assert hasattr(ragtune, name)


def test_errors_are_builtins_too():
    assert issubclass(ragtune.ConfigError, ValueError) and issubclass(ragtune.ConfigError, ragtune.RagtuneError)
    assert issubclass(ragtune.WorkspaceError, FileNotFoundError)
    assert issubclass(ragtune.InputError, ValueError)
    assert issubclass(ragtune.RefreshLockedError, RuntimeError)
    assert issubclass(ragtune.MissingDependencyError, ImportError)


def test_cli_help_is_light():
    code = "import sys; from ragtune.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass\nprint(sorted(m for m in ('torch', 'sentence_transformers', 'faiss', 'chromadb', 'transformers') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "[]"


def test_checkout_cli_shim():
    root = Path(__file__).resolve().parent.parent
    out = subprocess.run([sys.executable, str(root / "cli.py"), "--help"], capture_output=True, text=True, check=True, cwd=root).stdout
    assert "refresh" in out and "index" in out


# --- the module graph, read from the source with ``ast`` (nothing is imported) ---------------------------------

REPO = Path(__file__).resolve().parent.parent


def _package_dir() -> Path:
    spec = importlib.util.find_spec("ragtune")
    assert spec is not None and spec.origin is not None
    return Path(spec.origin).parent


def _module_files() -> dict[str, Path]:
    """Module name → source file, for the installed ``ragtune`` package and the repo's ``integrations/``."""
    out: dict[str, Path] = {}
    for prefix, root in (("ragtune", _package_dir()), ("ragtune.integrations", REPO / "integrations")):
        for path in sorted(root.rglob("*.py")):
            rel = path.relative_to(root).with_suffix("").parts
            if "__pycache__" in rel:
                continue
            if rel[-1] == "__init__":
                rel = rel[:-1]
            out[".".join((prefix, *rel))] = path
    return out


def _is_ragtune(name: str) -> bool:
    return name == "ragtune" or name.startswith("ragtune.")


def _nearest_module(name: str, modules: dict[str, Path]) -> str:
    """``name`` itself when it is a module, else its longest prefix that is (at worst ``ragtune``)."""
    while name not in modules and "." in name:
        name = name.rsplit(".", 1)[0]
    return name


def _imports(module: str, path: Path, modules: dict[str, Path]) -> list[tuple[str, int]]:
    """Every ragtune module ``path`` imports, anywhere in the file (functions and ``TYPE_CHECKING`` blocks too), with its line."""
    is_package = path.name == "__init__.py"
    out: list[tuple[str, int]] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            out += [(_nearest_module(a.name, modules), node.lineno) for a in node.names if _is_ragtune(a.name)]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against this module's package
                package = module if is_package else module.rsplit(".", 1)[0]
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            if not _is_ragtune(base):
                continue
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                out.append((sub if sub in modules else _nearest_module(base, modules), node.lineno))
    return out


def _graph() -> tuple[dict[str, Path], dict[str, dict[str, int]]]:
    """The modules and their edges ``{importer: {imported: first line}}`` (self-imports dropped)."""
    modules = _module_files()
    graph: dict[str, dict[str, int]] = {}
    for name, path in modules.items():
        edges: dict[str, int] = {}
        for target, line in _imports(name, path, modules):
            if target != name:
                edges.setdefault(target, line)
        graph[name] = edges
    return modules, graph


def _shortest_path(graph: dict[str, dict[str, int]], start: str, goal: str) -> list[str] | None:
    """The shortest import chain ``start -> ... -> goal`` (BFS, neighbours in sorted order), or ``None``."""
    parent: dict[str, str] = {start: start}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(graph.get(v, {})):
                if w in parent:
                    continue
                parent[w] = v
                if w == goal:
                    path = [w]
                    while path[-1] != start:
                        path.append(parent[path[-1]])
                    return path[::-1]
                nxt.append(w)
        frontier = nxt
    return None


def _cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """For every import edge that lies on a cycle, the shortest such cycle (each cycle once, starting at its smallest module)."""
    found: set[tuple[str, ...]] = set()
    for src in sorted(graph):
        for target in sorted(graph[src]):
            back = _shortest_path(graph, target, src)
            if back is None:
                continue
            ring = back  # target -> ... -> src, closed by the edge src -> target
            i = ring.index(min(ring))
            found.add(tuple(ring[i:] + ring[:i]))
    return [[*ring, ring[0]] for ring in sorted(found)]


def test_no_import_cycles():
    modules, graph = _graph()
    assert {"ragtune", "ragtune.api", "ragtune.index.base", "ragtune.integrations.langchain"} <= set(modules)
    problems = [
        f"{src} imports the package facade 'ragtune' (line {edges['ragtune']}); import the submodule instead"
        for src, edges in sorted(graph.items())
        if "ragtune" in edges
    ]
    problems += [" -> ".join(cycle) for cycle in _cycles(graph)]
    assert not problems, "import cycles / facade imports:\n" + "\n".join(problems)


def _within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def test_layering():
    _modules, graph = _graph()
    problems = []

    def forbid(src: str, target: str, why: str) -> None:
        problems.append(f"{src} imports {target} (line {graph[src][target]}): {why}")

    for src, edges in sorted(graph.items()):
        for target in sorted(edges):
            if _within(src, "ragtune.index") and any(_within(target, p) for p in ("ragtune.workspace", "ragtune.serving", "ragtune.refresh", "ragtune.api")):
                forbid(src, target, "the index layer sits below workspace/serving/refresh/api")
            if src == "ragtune.index.base" and _within(target, "ragtune.index"):
                forbid(src, target, "the store protocol imports no backend and not the registry")
            if src == "ragtune.embedder" and _within(target, "ragtune.training"):
                forbid(src, target, "serving-time embedding must not import training (use ragtune.query_tier)")
            if src == "ragtune.config" and target != "ragtune.errors":
                forbid(src, target, "config imports nothing of ragtune but ragtune.errors")
            if _within(target, "ragtune.api") and not (
                src in ("ragtune", "ragtune.cli") or _within(src, "ragtune.server") or _within(src, "ragtune.integrations")
            ):
                forbid(src, target, "only ragtune.cli, ragtune.server, ragtune.integrations.* and the facade may import the api")
    assert not problems, "layering violations:\n" + "\n".join(problems)


def test_tests_use_public_names():
    problems = []
    for folder in ("tests", "benchmarks"):
        for path in sorted((REPO / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
                if isinstance(node, ast.ImportFrom) and not node.level and node.module and _is_ragtune(node.module):
                    private = [a.name for a in node.names if a.name.startswith("_") and not a.name.startswith("__")]
                    if any(part.startswith("_") and not part.startswith("__") for part in node.module.split(".")):
                        private.insert(0, f"(module {node.module})")
                    if private:
                        problems.append(f"{path.relative_to(REPO)}:{node.lineno}: from {node.module} import {', '.join(private)}")
                elif isinstance(node, ast.Import):
                    for a in node.names:
                        if _is_ragtune(a.name) and any(p.startswith("_") and not p.startswith("__") for p in a.name.split(".")):
                            problems.append(f"{path.relative_to(REPO)}:{node.lineno}: import {a.name}")
    assert not problems, "tests and benchmarks must use ragtune's public names:\n" + "\n".join(problems)
