"""The package's import structure, read from the source with ``ast`` (no imports, no JAX): the library
never imports the data_prep tool package, module-level imports form no cycle, and no layer imports
one above it (DESIGN.md: data flows one way; errors.py is the floor)."""
from __future__ import annotations

import ast
import os

import pytest

ROOT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "fetal_ssl_jax")

# Lower number = lower layer; a module may import its own layer and those below (errors.py: nothing of ours).
LAYERS = {
    "errors": 0,
    "configuration": 1, "config_validation": 1, "object_storage": 1, "workdir_lock": 1, "monitors": 1, "losses": 1, "cli_errors": 1,
    "gc_tuning": 1,
    "data": 2, "phantom": 2, "kernels": 2,
    "models": 3,
    "methods": 4,
    "train": 5,
    "evaluate": 6,
    "report": 7, "experiments": 7,
}


def _modules() -> dict[str, str]:
    out = {}
    for dirpath, _, files in os.walk(ROOT):
        for f in files:
            if f.endswith(".py"):
                rel = os.path.relpath(os.path.join(dirpath, f), os.path.dirname(ROOT))[:-3].replace(os.sep, ".")
                out[rel[:-len(".__init__")] if rel.endswith(".__init__") else rel] = os.path.join(dirpath, f)
    return out


MODULES = _modules()


def _imports(path: str, module: str, top_level_only: bool) -> set[str]:
    """Imported module names (a ``from pkg import name`` counts as pkg.name when that is a module)."""
    tree = ast.parse(open(path, encoding="utf-8").read(), path)
    package = module if path.endswith("__init__.py") else module.rpartition(".")[0]
    nodes = []
    if top_level_only:  # what runs on import: module body, and its if/try blocks
        stack = list(tree.body)
        while stack:
            n = stack.pop()
            if isinstance(n, (ast.Import, ast.ImportFrom)):
                nodes.append(n)
            elif isinstance(n, (ast.If, ast.Try, ast.With)):
                stack.extend(n.body + getattr(n, "orelse", []) + getattr(n, "finalbody", [])
                             + [b for h in getattr(n, "handlers", []) for b in h.body])
    else:
        nodes = [n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))]
    out = set()
    for n in nodes:
        if isinstance(n, ast.Import):
            out.update(a.name for a in n.names)
            continue
        base = n.module or ""
        if n.level:
            parts = package.split(".")
            base = ".".join(parts[:len(parts) - n.level + 1] + ([base] if base else []))
        for a in n.names:
            full = f"{base}.{a.name}"
            out.add(full if full in MODULES or not base.startswith("fetal_ssl_jax") else base)
    return out


def _commands() -> set[str]:
    """The modules launch.py runs as commands (its COMMANDS table): entry points, above every layer."""
    tree = ast.parse(open(os.path.join(os.path.dirname(ROOT), "launch.py"), encoding="utf-8").read())
    table = next(n.value for n in tree.body if isinstance(n, ast.AnnAssign) and n.target.id == "COMMANDS")
    return {ast.literal_eval(v)[0] for v in table.values}


COMMANDS = _commands()


def _layer(module: str) -> int:
    return max(LAYERS.values()) + 1 if module in COMMANDS else LAYERS[module.split(".")[1]]


def test_every_module_has_a_layer():
    assert not [m for m in MODULES if m != "fetal_ssl_jax" and m.split(".")[1] not in LAYERS]


def test_library_never_imports_data_prep():
    bad = {m: sorted(i for i in _imports(p, m, False) if i.split(".")[0] == "data_prep") for m, p in MODULES.items()}
    assert {m: i for m, i in bad.items() if i} == {}


@pytest.mark.parametrize("lazy", [False, True], ids=["module-level", "with-lazy"])
def test_no_import_cycle(lazy):
    """Module-level imports, then also those inside functions (evaluate's old features <-> labelled_data
    circle was one of lazy imports: it worked only because each side imported the other late)."""
    graph = {m: sorted(i for i in _imports(p, m, not lazy) if i in MODULES and i != m) for m, p in MODULES.items()}
    state: dict[str, int] = {}  # 1 on the stack, 2 done

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for n in graph[m]:
            if state.get(n) == 1:
                pytest.fail("import cycle: " + " -> ".join(path[path.index(n):] + [m, n]) if n in path
                            else f"import cycle through {m} -> {n}")
            if n not in state:
                visit(n, path + [m])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [])


def test_no_import_from_a_higher_layer():
    """Function-level imports count too: a lazy import upward is still a dependency upward."""
    up = []
    for m, p in MODULES.items():
        if m == "fetal_ssl_jax":
            continue
        for i in _imports(p, m, False):
            if i.startswith("fetal_ssl_jax.") and _layer(i) > _layer(m):
                up.append(f"{m} -> {i}")
    assert sorted(up) == []
