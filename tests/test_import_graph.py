"""The packages' import graph has no cycles: every ``from .x import y`` (at module level or inside a function) points
one way, so a module can be read, tested and moved without the modules that import it."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("natgrad", "natgrad_diffusion")


def import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    """``{module: modules of the packages it imports}`` (a package's ``__init__`` is the package; importing a parent
    package from inside it is not an edge)."""
    graph: dict[str, set[str]] = {}
    for package in PACKAGES:
        for path in (root / package).rglob("*.py"):
            parts = path.relative_to(root).with_suffix("").parts
            module = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            here = module.split(".") if parts[-1] == "__init__" else module.split(".")[:-1]
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.ImportFrom):
                    if node.level:
                        base = here[: len(here) - (node.level - 1)]
                        target = ".".join(base + ([node.module] if node.module else []))
                    else:
                        target = node.module or ""
                    names = [target]
                elif isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                else:
                    continue
                for name in names:
                    if name.split(".")[0] in PACKAGES and name != module and not module.startswith(name + "."):
                        graph.setdefault(module, set()).add(name)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in list(graph):
        if v not in index:
            visit(v)
    return found


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles_in_the_packages():
    graph = import_graph()
    assert "natgrad_diffusion.cli.app" in graph and "natgrad_diffusion.rewards.features" in graph  # the graph is read
    assert cycles(graph) == []


#: natgrad_diffusion's layers, bottom first; a module imports only from its own layer or the layers below it (the
#: stages, ``supervised`` and ``training``, share a rank and do not import each other)
LAYERS = {
    "core": 0, "_compat": 0, "moved": 0,
    "data": 1,
    "sampling": 2,
    "rewards": 3,
    "evaluation": 4,
    "supervised": 5, "training": 5,
    "recipe": 6,
    "cli": 7,
    "__main__": 8,
}  # fmt: skip


def layer_violations(graph: dict[str, set[str]]) -> list[str]:
    """``"a -> b"`` for every import from a layer to a higher one, or between two layers of the same rank."""
    bad = []
    for module, targets in graph.items():
        parts = module.split(".")
        if parts[0] != "natgrad_diffusion" or len(parts) == 1:
            continue  # natgrad, and the package's own __init__ (which installs the old paths)
        for target in targets:
            tparts = target.split(".")
            if tparts[0] != "natgrad_diffusion" or len(tparts) == 1 or tparts[1] == parts[1]:
                continue
            if LAYERS[tparts[1]] >= LAYERS[parts[1]]:
                bad.append(f"{module} -> {target}")
    return sorted(bad)


def test_the_layer_check_finds_an_upward_import():
    graph = {"natgrad_diffusion.data.x": {"natgrad_diffusion.training.loop"},
             "natgrad_diffusion.training.loop": {"natgrad_diffusion.supervised.stage", "natgrad_diffusion.core.config"}}  # fmt: skip
    assert layer_violations(graph) == [
        "natgrad_diffusion.data.x -> natgrad_diffusion.training.loop",
        "natgrad_diffusion.training.loop -> natgrad_diffusion.supervised.stage",
    ]


def test_every_layer_imports_only_downward():
    graph = import_graph()
    layers = {m.split(".")[1] for m in graph if m.startswith("natgrad_diffusion.")}
    assert layers <= set(LAYERS), layers - set(LAYERS)  # every subpackage has a rank
    assert layer_violations(graph) == []


def test_every_module_has_a_test_file_of_its_own():
    """Tests mirror modules: ``natgrad_diffusion/a/b.py`` is tested in ``tests/natgrad_diffusion/a/test_b.py``."""
    missing = []
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            if path.name in ("__init__.py", "__main__.py"):
                continue
            test = ROOT / "tests" / path.parent.relative_to(ROOT) / f"test_{path.stem.lstrip('_')}.py"
            if not test.is_file():
                missing.append(str(path.relative_to(ROOT)))
    assert missing == []
