"""The package's layers (docs/contributing.md): no import from a lower layer
into a higher one, and no import cycle, read from the source (every import,
at module level or inside a function)."""

import ast
import pathlib

import pytest

import hcam_ops

# The package as it is imported: the source tree, or an installed wheel
# (scripts/test_wheel.sh); pyproject.toml beside the tests' directory.
ROOT = pathlib.Path(hcam_ops.__file__).resolve().parent
PYPROJECT = pathlib.Path(__file__).resolve().parent.parent / "pyproject.toml"

# Lowest first; a module may import its own layer and the ones below. The
# package root (``hcam_ops/__init__``: the op faces plus nn and distill) sits
# with the library it re-exports.
LAYERS = (
    ("_C", "_build", "_torch_check", "_cli", "checkpoint"),
    ("ops", "reference", "metrics"),
    ("nn", "data", "distill", "superpixels", "<root>", "testing"),
    ("models",),
    ("cam",),
    ("train",),
)
RANK = {part: rank for rank, parts in enumerate(LAYERS) for part in parts}


def module_name(path: pathlib.Path, root: pathlib.Path) -> str:
    parts = ["hcam_ops", *path.relative_to(root).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(source: str, name: str, is_package: bool, modules: set[str]) -> set[str]:
    """The package's modules that ``source`` (module ``name``) imports: for
    ``from X import y``, ``X.y`` where that is a module, else ``X``."""
    package = name if is_package else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "hcam_ops")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "hcam_ops":
                continue
            for alias in node.names:
                child = f"{target}.{alias.name}"
                found.add(child if child in modules else target)
    return {m for m in found if m != name}


def part_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "<root>"


def graph(root: pathlib.Path = ROOT) -> dict[str, set[str]]:
    paths = {module_name(p, root): p for p in root.rglob("*.py")}
    modules = set(paths) | {"hcam_ops._C"}
    return {name: imports(p.read_text(), name, p.name == "__init__.py", modules) & modules for name, p in paths.items()}


def upward_imports(edges: dict[str, set[str]]) -> list[str]:
    bad = []
    for name, targets in sorted(edges.items()):
        for target in sorted(targets):
            lower, upper = part_of(name), part_of(target)
            if lower not in RANK or upper not in RANK:
                bad.append(f"{name} imports {target}: {lower if lower not in RANK else upper} is in no layer")
            elif RANK[upper] > RANK[lower]:
                bad.append(f"{name} ({lower}) imports {target} ({upper}), a higher layer")
    return bad


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan).
    A module's import of a package it is part of (``from . import name``)
    reaches its siblings through the package's face and is not counted."""
    index, low, stack, on, found, counter = {}, {}, [], set(), [], [0]

    def own_package(a: str, b: str) -> bool:
        return a.startswith(b + ".")

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if own_package(v, w):
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def test_no_import_reaches_up_a_layer():
    assert upward_imports(graph()) == []


def test_no_import_cycle():
    assert cycles(graph()) == []


def test_every_part_has_a_layer():
    parts = {part_of(m) for m in graph()}
    assert parts <= set(RANK), sorted(parts - set(RANK))


@pytest.fixture
def tree(tmp_path):
    """A small package of four layers to show the checks bite."""
    root = tmp_path / "hcam_ops"

    def write(rel: str, text: str) -> None:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)

    write("__init__.py", "")
    write("ops/__init__.py", "from .a import f\n")
    write("ops/a.py", "def f():\n    from ..train import loop\n")
    write("nn/__init__.py", "from ..ops import f\n")
    write("train/__init__.py", "")
    write("train/loop.py", "import hcam_ops.nn\n")
    write("models/x.py", "from ..cam import y\n")
    write("cam/y.py", "from ..models import x\n")
    return root


def test_checks_find_planted_faults(tree):
    edges = graph(tree)
    assert edges["hcam_ops.ops.a"] == {"hcam_ops.train.loop"}
    assert upward_imports(edges) == [
        "hcam_ops.models.x (models) imports hcam_ops.cam.y (cam), a higher layer",
        "hcam_ops.ops.a (ops) imports hcam_ops.train.loop (train), a higher layer",
    ]
    assert sorted(cycles(edges)) == [
        ["hcam_ops.cam.y", "hcam_ops.models.x"],
        ["hcam_ops.nn", "hcam_ops.ops", "hcam_ops.ops.a", "hcam_ops.train.loop"],
    ]


def test_every_cli_has_an_entry_point():
    """Each ``[project.scripts]`` entry names a callable ``main``, and every
    module with a ``main`` run as a program has one."""
    import importlib

    tomllib = pytest.importorskip("tomllib", reason="tomllib is in the standard library from Python 3.11")
    if not PYPROJECT.exists():
        pytest.skip(f"no pyproject.toml at {PYPROJECT}")
    pyproject = tomllib.loads(PYPROJECT.read_text())
    scripts = pyproject["project"]["scripts"]
    targets = set()
    for name, target in scripts.items():
        module, func = target.split(":")
        assert callable(getattr(importlib.import_module(module), func)), name
        targets.add(module)
    programs = {
        module_name(p, ROOT)
        for p in ROOT.rglob("*.py")
        if "\ndef main(" in p.read_text() and ('if __name__ == "__main__"' in p.read_text() or p.name == "__main__.py")
    }
    assert programs <= targets, sorted(programs - targets)
