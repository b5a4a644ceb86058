"""The package's imports go one way (the order in im2colnet/__init__.py's docstring).

Read from the source with `ast`, nothing is run: every import of one of our modules
must be at module level (never inside a function, where it would hide a cycle), must
point to a lower level or to the same package, and the graph must have no cycle.
"""
import ast
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Lowest first. A module may import from a lower level, or from its own level when both
# are in the same package (e.g. layers/conv.py from layers/base.py); the cycle check
# covers those. "im2colnet" is the package's own __init__.py: the public namespace.
LEVELS = [
    ("im2colnet._version", "im2colnet._build_config", "im2colnet._kernels"),
    ("im2colnet._check_build",),
    ("im2colnet._checks",),
    ("im2colnet._config",),
    ("im2colnet.runtime",),
    ("im2colnet.functional", "im2colnet.reference", "im2colnet.numpy_im2col", "im2colnet.info",
     "im2colnet.datasets"),
    ("im2colnet.layers",),
    ("im2colnet.losses", "im2colnet.optim", "im2colnet.state_dict"),
    ("im2colnet.model",),
    ("im2colnet.training",),
    ("im2colnet.serialization",),
    ("im2colnet.sequential",),
    ("im2colnet.models", "im2colnet.onnx"),
    ("im2colnet",),
    ("im2colnet.apps",),
    ("im2colnet.cli", "im2colnet.__main__"),
]


def _source_files():
    """{module name: path} of every .py file of the package (models/ installs as im2colnet.models)."""
    found = {}
    for top, package in (("im2colnet", "im2colnet"), ("models", "im2colnet.models")):
        base = os.path.join(ROOT, top)
        for folder, _, files in os.walk(base):
            rel = os.path.relpath(folder, base)
            parts = [package] + ([] if rel == "." else rel.split(os.sep))
            for name in files:
                if name.endswith(".py"):
                    stem = name[:-3]
                    module = ".".join(parts if stem == "__init__" else parts + [stem])
                    found[module] = os.path.join(folder, name)
    return found


MODULES = _source_files()


def _is_package(module):
    return os.path.basename(MODULES[module]) == "__init__.py"


def _level(module):
    """Index in LEVELS of the most specific entry that is module or a parent package of it."""
    best, best_len = None, -1
    for index, group in enumerate(LEVELS):
        for prefix in group:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best_len:
                best, best_len = index, len(prefix)
    return best


def _package_of(module):
    return module.split(".")[:2] if module.count(".") else [module]


def _resolve(module, node):
    """The modules of ours an Import/ImportFrom node loads (by name), [] for others'."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names if alias.name.split(".")[0] == "im2colnet"]
    if node.level:
        base = module.split(".") if _is_package(module) else module.split(".")[:-1]
        base = base[:len(base) - (node.level - 1)]
        target = ".".join(base + ([node.module] if node.module else []))
    else:
        target = node.module or ""
    if target.split(".")[0] != "im2colnet":
        return []
    out = []
    for alias in node.names:
        sub = f"{target}.{alias.name}"
        out.append(sub if sub in MODULES or sub == "im2colnet._build_config" else target)
    return out


def _imports():
    """[(importer, imported, line, inside a function)] for every import of our modules."""
    edges = []
    for module, path in MODULES.items():
        with open(path, encoding="utf-8") as fh:
            tree = ast.parse(fh.read(), path)

        def visit(node, in_function):
            for child in ast.iter_child_nodes(node):
                inside = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef,
                                                           ast.Lambda))
                if isinstance(child, (ast.Import, ast.ImportFrom)):
                    for target in _resolve(module, child):
                        edges.append((module, target, child.lineno, in_function))
                visit(child, inside)
        visit(tree, False)
    return edges


EDGES = _imports()


def test_every_module_has_a_level():
    assert [m for m in MODULES if _level(m) is None] == []


# Subpackages that need an optional extra (onnx, mpi4py) are imported inside the one
# function that uses them, so that everything else runs without the extra. Such an
# import must still point down the order (test_imports_point_down_the_order).
OPTIONAL_EXTRAS = ("im2colnet.onnx", "im2colnet.training.distributed")


def test_no_import_of_ours_inside_a_function():
    inside = [f"{a} -> {b} (line {line})" for a, b, line, in_function in EDGES
              if in_function and not b.startswith(OPTIONAL_EXTRAS)]
    assert inside == []


def test_imports_point_down_the_order():
    wrong = []
    for importer, imported, line, _ in EDGES:
        if imported == importer:
            continue
        low, high = _level(imported), _level(importer)
        same_package = _package_of(imported) == _package_of(importer)
        if low > high or (low == high and not same_package):
            wrong.append(f"{importer} (level {high}) imports {imported} (level {low}), line {line}")
    assert wrong == []


def test_no_cycles():
    graph = {}
    for importer, imported, _, _ in EDGES:
        if imported != importer:
            graph.setdefault(importer, set()).add(imported)
    state, cycles = {}, []

    def walk(node, path):
        state[node] = "open"
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                cycles.append(path[path.index(nxt):] + [nxt] if nxt in path else [node, nxt])
            elif nxt not in state:
                walk(nxt, path + [nxt])
        state[node] = "done"
    for node in sorted(graph):
        if node not in state:
            walk(node, [node])
    assert cycles == []


def test_the_order_is_documented_where_the_package_starts():
    """im2colnet/__init__.py's docstring lists the levels in this order (its table's first column)."""
    with open(MODULES["im2colnet"], encoding="utf-8") as fh:
        doc = ast.get_docstring(ast.parse(fh.read()))
    table = [line.split()[0].rstrip("/,") for line in doc.splitlines()
             if line.startswith("    ") and not line.startswith("     ")]
    assert table == ["_kernels", "_check_build", "_checks", "_config", "runtime", "functional", "layers",
                     "losses", "model", "training", "serialization", "sequential", "models",
                     "this", "apps"]
    named = [group[0].split(".")[-1] for group in LEVELS[1:]]
    assert [n for n in named if n not in table and n not in ("im2colnet", "cli")] == []


@pytest.mark.parametrize("bad, expected", [
    ("import im2colnet.apps.cli", "im2colnet.apps.cli"),
    ("from ..training import History", "im2colnet.training"),
    ("from .. import sequential", "im2colnet.sequential"),
])
def test_the_walker_sees_imports(bad, expected):
    """The resolution the checks rely on, on imports written as in layers/conv.py."""
    node = ast.parse(bad).body[0]
    assert _resolve("im2colnet.layers.conv", node) == [expected]
