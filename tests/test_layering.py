"""One-way imports between layers (DEVELOPERS.md): checked on the source, so a violation fails CI."""

import ast
from pathlib import Path

import lmforge

SRC = Path(lmforge.__file__).parent

# package -> lmforge packages it must never import
FORBIDDEN = {
    "redact": {"storage", "config", "tokenizer", "data", "nn", "models", "distributed", "optim", "checkpoint", "train", "eval", "generate", "release"},
    "storage": {"config", "tokenizer", "data", "nn", "models", "distributed", "optim", "checkpoint", "train", "eval", "generate", "release"},
    "config": {"tokenizer", "data", "nn", "models", "distributed", "optim", "checkpoint", "train", "eval", "generate", "release"},
    "tokenizer": {"nn", "models", "distributed", "optim", "checkpoint", "train", "eval", "generate", "release"},
    "data": {"nn", "models", "distributed", "optim", "checkpoint", "train", "eval", "generate", "release"},
    "nn": {"models", "distributed", "optim", "checkpoint", "train", "eval", "generate", "release"},
    "models": {"distributed", "optim", "checkpoint", "train", "eval", "generate", "release"},
    "distributed": {"train", "eval", "generate", "release"},
    "optim": {"train", "eval", "generate", "release"},
    "checkpoint": {"train", "eval", "generate", "release"},
    "eval": {"train"},
    "generate": {"train"},
    "release": {"train"},
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
        files = [SRC / f"{pkg}.py"] if pkg in ("config", "storage", "redact") else sorted((SRC / pkg).rglob("*.py"))
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
