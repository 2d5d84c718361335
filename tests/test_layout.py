"""The package's layers: data flows server -> live -> engine -> models' runners and back, and a
module never imports one of a higher layer (nor tests or benchmarks)."""

from __future__ import annotations

import ast
from pathlib import Path

import sasr

ROOT = Path(sasr.__file__).parent
# lowest first; a module may import its own layer and those below it
LAYERS = [
    {"protocol", "config", "metrics", "audio", "kernels"},
    {"engine"},
    {"live"},
    {"models"},
    {"server", "client", "cli", "__main__", "ray_serve"},
]


def layer_of(module: str) -> int:
    top = module.split(".")[1] if module.startswith("sasr.") else module
    return next(i for i, names in enumerate(LAYERS) if top in names)


def sasr_imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


def test_no_module_imports_a_higher_layer():
    violations = []
    for path in ROOT.rglob("*.py"):
        relative = path.relative_to(ROOT.parent).with_suffix("")
        module = ".".join(relative.parts).removesuffix(".__init__")
        if module == "sasr":
            continue
        for name in sasr_imports(path):
            if name.startswith(("tests", "bench")):
                violations.append(f"{module} imports {name}")
            elif name.startswith("sasr.") and layer_of(name) > layer_of(module):
                violations.append(f"{module} imports {name}")
    assert not violations, violations


def test_model_families_share_module_names():
    families = [p for p in (ROOT / "models").iterdir() if p.is_dir() and (p / "__init__.py").exists()]
    names = [{f.stem for f in family.glob("*.py")} for family in families]
    common = {"load", "model", "vocab", "runner", "decode", "live", "engine"}
    assert len(families) >= 2 and all(common <= n for n in names), names
