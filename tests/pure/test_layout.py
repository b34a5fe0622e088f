"""The source tree's shape: no import circles (between modules or packages), small modules, no tracked symlinks.

The import graph is read with ``ast`` (no imports run): every ``import``/``from ... import`` anywhere in a
module (function-level ones too, since a lazy import still ties two modules together), relative imports
resolved against the module's package, ``from . import x`` counted as an edge to the submodule ``x``, and
the ``"module:function"`` strings handed to the CLI's and server's lazy loaders.
"""

from __future__ import annotations

import ast
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SIDECAR = REPO / "sidecar" / "sharp_sidecar"
SHARED = REPO / "sharp_blender" / "io"
MAX_LINES = 400
LAZY_LOADERS = {"lazy", "lazy_op"}


def module_files(root: Path, top: str) -> dict[str, Path]:
    modules = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join([top, *parts])] = path
    return modules


def sidecar_modules() -> dict[str, Path]:
    # The sidecar as built: its own tree plus the add-on's io/ package, shipped as sharp_sidecar.io.
    modules = module_files(SIDECAR, "sharp_sidecar")
    modules.update(module_files(SHARED, "sharp_sidecar.io"))
    return modules


def package_of(module: str, path: Path) -> str:
    return module if path.name == "__init__.py" else module.rpartition(".")[0]


def resolve(package: str, level: int, name: str | None) -> str:
    base = package.split(".")
    if level > 1:
        base = base[: len(base) - (level - 1)]
    return ".".join([*base, name] if name else base)


def imports_of(module: str, path: Path, known: set[str]) -> set[str]:
    """The modules of ``known`` that ``module`` imports (directly, at any nesting level)."""
    package = package_of(module, path)
    found: set[str] = set()

    def add(target: str) -> None:
        # "a.b.c" where only "a.b" is a module: the name c is an attribute of a.b.
        while target and target not in known:
            target = target.rpartition(".")[0]
        if target and target != module:
            found.add(target)

    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            source = resolve(package, node.level, node.module) if node.level else (node.module or "")
            for alias in node.names:
                submodule = f"{source}.{alias.name}"
                add(submodule if submodule in known else source)
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in LAZY_LOADERS
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            target = node.args[0].value.partition(":")[0]
            level = len(target) - len(target.lstrip("."))
            add(resolve(package, level, target.lstrip(".") or None) if level else target)
    return found


def import_graph(modules: dict[str, Path]) -> dict[str, set[str]]:
    known = set(modules)
    return {name: imports_of(name, path, known) for name, path in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle as [a, b, ..., a], or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def test_the_graph_sees_relative_lazy_and_string_imports() -> None:
    graph = import_graph(sidecar_modules())
    # from ..io import protocol (a submodule through `from package import name`)
    assert "sharp_sidecar.io.protocol" in graph["sharp_sidecar.errors"]
    # from .gaussians import unproject (a name of a module, one package up)
    assert "sharp_sidecar.gaussians" in graph["sharp_sidecar.inference.fastpath"]
    # a function-level import, and the lazy "..serve.server:run" handler
    assert "sharp_sidecar.inference.batch" in graph["sharp_sidecar.inference.predict"]
    assert "sharp_sidecar.serve.server" in graph["sharp_sidecar.cli.main"]
    assert "sharp_sidecar.render.render_op" in graph["sharp_sidecar.serve.jobs"]
    # inside the shared package: from .atomic import atomic_path
    assert graph["sharp_sidecar.io.ply"] == {"sharp_sidecar.io.atomic"}


def test_the_cycle_finder_finds_a_circle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_the_sidecar_has_no_import_circles() -> None:
    cycle = find_cycle(import_graph(sidecar_modules()))
    assert cycle is None, "import circle: " + " -> ".join(cycle or [])


def test_the_sidecar_packages_have_no_circles() -> None:
    """One level up: image, model, inference, render, serve, cli (and the top-level modules) form no circle."""
    packages: dict[str, set[str]] = {}
    for module, targets in import_graph(sidecar_modules()).items():
        source = ".".join(module.split(".")[:2])
        packages.setdefault(source, set()).update(".".join(t.split(".")[:2]) for t in targets)
        packages[source].discard(source)
    cycle = find_cycle(packages)
    assert cycle is None, "package circle: " + " -> ".join(cycle or [])


def test_the_add_on_has_no_import_circles() -> None:
    cycle = find_cycle(import_graph(module_files(REPO / "sharp_blender", "sharp_blender")))
    assert cycle is None, "import circle: " + " -> ".join(cycle or [])


def module_level(tree: ast.Module) -> list[ast.AST]:
    """The nodes that run on import: everything outside function bodies."""
    found: list[ast.AST] = []
    pending: list[ast.AST] = [tree]
    while pending:
        node = pending.pop()
        found.append(node)
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            pending.extend(ast.iter_child_nodes(node))
    return found


def test_the_shared_package_imports_only_itself_numpy_and_the_stdlib_on_import() -> None:
    for name, path in module_files(SHARED, "sharp_blender.io").items():
        for node in module_level(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level:
                assert node.level == 1, f"{name} reaches outside io/: {ast.unparse(node)}"
            elif isinstance(node, ast.ImportFrom | ast.Import):
                roots = {a.name.split(".")[0] for a in node.names} if isinstance(node, ast.Import) else {node.module}
                assert not roots & {"bpy", "torch", "sharp_blender", "sharp_sidecar"}, f"{name}: {ast.unparse(node)}"


def test_no_sidecar_module_is_too_long() -> None:
    too_long = {
        name: n
        for name, path in sidecar_modules().items()
        if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    assert not too_long, f"modules over {MAX_LINES} lines (split them): {too_long}"


def test_no_symlinks_are_tracked() -> None:
    listing = subprocess.run(["git", "ls-files", "-s"], cwd=REPO, capture_output=True, text=True, check=True)
    links = [line.split("\t", 1)[1] for line in listing.stdout.splitlines() if line.startswith("120000 ")]
    assert not links, f"tracked symlinks (Windows checkouts and zips drop them): {links}"
