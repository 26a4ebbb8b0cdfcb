"""The layers, checked from the code: every import (module level or inside a function) points down.

    app, deployments      the shell: the CLI, the servers, the deployments
    flows                 Prefect flows: the pipeline as it reads
    tasks                 thin Prefect wrappers over the steps
    evoforge.training     finetune data, training driving, evaluation and promotion
    evoforge.steps        the steps of a run, an `ask` and `score`: plain functions over the layers below
    evoforge.judges | evoforge.search | evoforge.knowledge   the judges, calibration and selection | generation plans
                          and strategies | the knowledge base (chunks, embeddings, retrieval)
    evoforge.core         domain, archive, experts, config, store, tracking
    models                the backends (one protocol), embedder, trainer: imports nothing of the project

A module may import its own package and any layer below; peers (judges, search, knowledge) do not import each other.
Run it alone: `pytest tests/test_layers.py` (no model loads; a second).
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

LAYERS = [  # top first
    {"app", "deployments"},
    {"flows"},
    {"tasks"},
    {"evoforge.training"},
    {"evoforge.steps"},
    {"evoforge.judges", "evoforge.search", "evoforge.knowledge"},
    {"evoforge.core"},
    {"models"},
    {"evoforge"},  # the package's face: environment defaults only
]
RANK = {package: rank for rank, packages in enumerate(LAYERS) for package in packages}


def package_of(module: str) -> str | None:
    """The layer a dotted module name belongs to (the longest known prefix), or None for a third-party one."""
    parts = module.split(".")
    for n in (2, 1):
        if ".".join(parts[:n]) in RANK:
            return ".".join(parts[:n])
    return None


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> list[tuple[int, str]]:
    """Every module `path` imports, with the line, wherever the import statement stands."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
            # `from evoforge import x` names the subpackage x
            found += [(node.lineno, f"{node.module}.{alias.name}") for alias in node.names
                      if package_of(f"{node.module}.{alias.name}") not in (None, package_of(node.module))]
    return found


def project_files() -> list[Path]:
    folders = ["app", "evoforge", "models", "flows", "tasks", "deployments"]
    return sorted(p for folder in folders for p in (ROOT / folder).rglob("*.py"))


def violations(files: list[Path]) -> list[str]:
    found = []
    for path in files:
        source = package_of(module_name(path))
        for line, target in imports(path):
            target_package = package_of(target)
            if target_package is None or target_package == source:
                continue
            if RANK[target_package] <= RANK[source]:
                found.append(f"{path.relative_to(ROOT)}:{line} ({source}) imports {target} ({target_package}), "
                             "which is not below it")
    return found


def test_every_import_points_down():
    assert violations(project_files()) == []


def test_models_import_nothing_of_the_project():
    bad = [f"{p.relative_to(ROOT)}:{line} imports {t}" for p in (ROOT / "models").rglob("*.py")
           for line, t in imports(p) if t.split(".")[0] in ("evoforge", "flows", "tasks", "deployments")]
    assert bad == []


@pytest.mark.parametrize("source, target", [
    ("models/x.py", "evoforge.core.config"),       # a backend reaching up into the config
    ("evoforge/core/x.py", "evoforge.steps.evolution"),
    ("evoforge/judges/x.py", "evoforge.search.generation"),  # peers
    ("app/x.py", "flows"),  # allowed: the shell runs the flows
])
def test_the_check_catches_an_upward_import(tmp_path, monkeypatch, source, target):
    """The checker itself: an upward or sideways import is reported, a downward one is not."""
    monkeypatch.setattr(__import__(__name__), "ROOT", tmp_path)
    path = tmp_path / source
    path.parent.mkdir(parents=True)
    path.write_text(f"def f():\n    import {target}\n")
    expected = [] if source.startswith("app") else [f"{source}:2"]
    assert [v.split(" ")[0] for v in violations([path])] == expected
