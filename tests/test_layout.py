"""The package's layout: no import cycle between its modules, and the folders in layers.

Why: a cycle (``experiment_file`` and ``cli`` once imported each other) works only while one side
imports lazily, breaks when someone moves an import to the top, and hides which module is the
lower layer. The graph is read from the source with ``ast``, so imports inside functions count
too, as does a package's ``__init__`` that an import runs on the way (``from ..hosts.tpp import
x`` runs ``hosts/tpp/__init__.py``), except the importing module's own ancestors, which are
already running when it is.
"""
from __future__ import annotations

import ast
from pathlib import Path

import dpm_lab

PACKAGE = Path(dpm_lab.__file__).parent


def _modules(root: Path = PACKAGE) -> dict[str, Path]:
    """Every module of the package by dotted name (a package by its own name)."""
    found = {}
    for path in sorted(root.rglob("*.py")):
        parts = ("dpm_lab",) + path.relative_to(root).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def import_graph(root: Path = PACKAGE) -> dict[str, set[str]]:
    """Module -> the package's modules its imports run (see the module docstring)."""
    modules = _modules(root)
    graph = {}
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        here = name.split(".") if is_package else name.split(".")[:-1]
        targets = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(here[:len(here) - node.level + 1] + ([base] if base else []))
                targets.add(base)
                targets.update(f"{base}.{a.name}" for a in node.names)
        ancestors = {".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 1)}
        edges = set()
        for target in targets:
            parts = target.split(".")
            for i in range(1, len(parts) + 1):  # the module and the packages above it
                prefix = ".".join(parts[:i])
                if prefix in modules and prefix not in ancestors and prefix != name:
                    edges.add(prefix)
        graph[name] = edges
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle through each strongly connected component with more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
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
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycle():
    assert cycles(import_graph()) == []


def _folder(module: str) -> str:
    return module.split(".")[1] if "." in module else ""


# what each folder may import besides itself: the substrate nothing, the algorithms the substrate,
# a host folder the part of the experiment machinery that defines what a host gives it
ALLOWED = {"training": {"training"}, "pruning": {"training", "pruning"}}
HOST_INTERFACE = {"dpm_lab.experiments", "dpm_lab.experiments.host", "dpm_lab.experiments.method",
                  "dpm_lab.experiments.identity", "dpm_lab.experiments.option_types",
                  "dpm_lab.experiments.profiles"}


def test_each_folder_imports_only_the_layers_below_it():
    wrong = []
    for module, targets in import_graph().items():
        folder = _folder(module)
        for target in targets:
            if folder in ALLOWED and _folder(target) not in ALLOWED[folder]:
                wrong.append(f"{module} -> {target}")
            if (folder == "hosts" and _folder(target) not in ("training", "pruning", "hosts")
                    and target not in HOST_INTERFACE):
                wrong.append(f"{module} -> {target}")
    assert wrong == []


def test_a_cycle_is_found(tmp_path):
    """The check itself: two modules importing each other, one of them lazily, are a cycle."""
    pkg = tmp_path / "dpm_lab"
    (pkg / "experiments").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "experiments" / "__init__.py").write_text("")
    (pkg / "experiments" / "cli.py").write_text("def f():\n    from .experiment_file import x\n")
    (pkg / "experiments" / "experiment_file.py").write_text("from .cli import f\nx = 1\n")
    assert cycles(import_graph(pkg)) == [["dpm_lab.experiments.cli",
                                          "dpm_lab.experiments.experiment_file"]]
