"""The packages import each other only downwards, as README "Architecture" draws them: the maths
and layers know nothing of agents, envs or the run loop, an agent family knows nothing of the
loop that drives it, and the loop knows agents only through their contract."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "reverie"

# Which top-level parts of `reverie` each part may import (besides itself).
ALLOWED = {
    "errors": set(),
    "files": set(),
    "kernels": {"errors"},
    "distributed": {"errors"},  # the collectives an update needs (no-ops in a world of one)
    "nn": {"errors", "kernels", "distributed"},
    "config": {"errors"},
    "envs": {"config", "errors"},
    "replay": {"errors", "files"},
    "video": {"errors"},
    "progress": {"errors"},
    "logging": {"errors", "progress", "video"},
    "planners": {"errors", "nn"},
    "agents": {"errors", "config", "nn", "kernels", "planners", "distributed"},
    "run": {"errors", "files", "config", "envs", "replay", "agents", "video", "logging", "progress", "distributed"},
}
TOP = {"api", "cli", "__init__", "__main__"}  # the user-facing entry points may import anything


def part_of(path: Path) -> str:
    rel = path.relative_to(PACKAGE)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def imported_parts(path: Path) -> set[str]:
    """The top-level parts of `reverie` a module imports, absolute or relative."""
    tree = ast.parse(path.read_text())
    package = path.relative_to(PACKAGE.parent).with_suffix("").parts[:-1]  # ("reverie", "run")
    if path.name == "__init__.py":
        package = path.relative_to(PACKAGE.parent).parts[:-1]
    found = set()
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - node.level + 1]
                module = ".".join(base + ((node.module,) if node.module else ()))
                names = [module] if node.module else [f"{module}.{alias.name}" for alias in node.names]
            elif node.module:
                names = [node.module] + ([f"{node.module}.{a.name}" for a in node.names] if node.module == "reverie" else [])
        for name in names:
            parts = name.split(".")
            if parts[0] == "reverie" and len(parts) > 1:
                found.add(parts[1])
    return found


MODULES = sorted(p for p in PACKAGE.rglob("*.py") if part_of(p) not in TOP)


def test_every_part_is_in_the_layering():
    assert {part_of(p) for p in MODULES} <= set(ALLOWED), "a new part of reverie: add it to ALLOWED and the README"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_follow_the_layering(path):
    part = part_of(path)
    wrong = imported_parts(path) - ALLOWED[part] - {part}
    assert not wrong, f"{path.relative_to(PACKAGE)} ({part}) imports {sorted(wrong)}"


def test_the_checker_sees_relative_and_absolute_imports(tmp_path):
    """The checker itself: a module that reaches up is caught (so the tests above can fail)."""
    assert imported_parts(PACKAGE / "run" / "evaluate.py") >= {"agents", "envs"}
    assert "errors" in imported_parts(PACKAGE / "nn" / "layers.py")
