"""The architecture, checked on the source so a violation fails CI (docs/architecture.md): one-way
imports between layers, no import cycles inside a package, no private names imported across modules,
model code without torch.distributed."""

import ast
from pathlib import Path

import lmforge

SRC = Path(lmforge.__file__).parent

# package -> lmforge packages it must never import
FORBIDDEN = {
    "redact": {"corpus", "storage", "config", "tokenizer", "data", "nn", "models", "distributed", "optim", "checkpoint", "train", "eval", "generate", "release"},
    "storage": {"corpus", "config", "tokenizer", "data", "nn", "models", "distributed", "optim", "checkpoint", "train", "eval", "generate", "release"},
    "config": {"corpus", "tokenizer", "data", "nn", "models", "distributed", "optim", "checkpoint", "train", "eval", "generate", "release"},
    "corpus": {"nn", "models", "distributed", "optim", "checkpoint", "train", "eval", "generate", "release"},
    "tokenizer": {"corpus", "nn", "models", "distributed", "optim", "checkpoint", "train", "eval", "generate", "release"},
    "data": {"corpus", "nn", "models", "distributed", "optim", "checkpoint", "train", "eval", "generate", "release"},
    "nn": {"corpus", "models", "distributed", "optim", "checkpoint", "train", "eval", "generate", "release"},
    "models": {"corpus", "distributed", "optim", "checkpoint", "train", "eval", "generate", "release"},
    "distributed": {"corpus", "train", "eval", "generate", "release"},
    "optim": {"corpus", "train", "eval", "generate", "release"},
    "checkpoint": {"corpus", "train", "eval", "generate", "release"},
    "eval": {"corpus", "train"},
    "generate": {"corpus", "train"},
    "release": {"corpus", "train"},
}


def _imports(path: Path):
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module


def test_layers_import_one_way():
    problems = []
    for pkg, forbidden in FORBIDDEN.items():
        files = [SRC / f"{pkg}.py"] if (SRC / f"{pkg}.py").is_file() else sorted((SRC / pkg).rglob("*.py"))
        for f in files:
            for mod in _imports(f):
                parts = mod.split(".")
                if parts[0] == "lmforge" and len(parts) > 1 and parts[1] in forbidden:
                    problems.append(f"{f.relative_to(SRC)} imports {mod}")
    assert not problems, "layering violations:\n" + "\n".join(problems)


def test_model_code_never_imports_torch_distributed():
    for f in list((SRC / "models").rglob("*.py")) + list((SRC / "nn").rglob("*.py")):
        for mod in _imports(f):
            assert not mod.startswith("torch.distributed"), f"{f.name} imports {mod}"


# --- cycles and private names ----------------------------------------------------------------------
def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _runtime_imports(path: Path):
    """(module, imported name or None) of every import that runs (at module level or inside a
    function), leaving out ``if TYPE_CHECKING:`` blocks, which never run."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skip = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip.update(id(n) for stmt in node.body for n in ast.walk(stmt))
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            yield from ((a.name, None) for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield from ((node.module, a.name) for a in node.names)


MODULES = {_module_name(p): p for p in SRC.rglob("*.py")}


def _graph() -> dict[str, set[str]]:
    graph = {}
    for name, path in MODULES.items():
        deps = set()
        for mod, imported in _runtime_imports(path):
            target = f"{mod}.{imported}" if imported and f"{mod}.{imported}" in MODULES else mod
            if target in MODULES and target != name:
                deps.add(target)
        graph[name] = deps
    return graph


def _package(module: str) -> str:
    return ".".join(module.split(".")[:2])


def test_no_import_cycles_inside_a_package():
    """A module never imports (directly or through others of its package) a module that imports it
    back: each package reads bottom up. (A package's ``__init__`` re-exporting its modules is the top.)"""
    graph = _graph()
    cycles = set()

    def visit(node, stack, on_stack, seen):
        seen.add(node)
        stack.append(node)
        on_stack.add(node)
        for dep in graph[node]:
            if _package(dep) != _package(node) or dep == _package(node):
                continue
            if dep in on_stack:
                cycles.add(" -> ".join(stack[stack.index(dep):] + [dep]))
            elif dep not in seen:
                visit(dep, stack, on_stack, seen)
        stack.pop()
        on_stack.discard(node)

    seen: set[str] = set()
    for module in sorted(graph):
        if module not in seen:
            visit(module, [], set(), seen)
    assert not cycles, "import cycles:\n" + "\n".join(sorted(cycles))


def test_no_private_names_imported_across_modules():
    found = []
    for name, path in MODULES.items():
        for mod, imported in _runtime_imports(path):
            if mod.startswith("lmforge") and imported and imported.startswith("_") and not imported.startswith("__"):
                found.append(f"{name}: from {mod} import {imported}")
    assert not found, "private names imported from other modules:\n" + "\n".join(found)
