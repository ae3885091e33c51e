"""Names as data: models, datasets, attacks, objectives and backends live in registries of one
kind; generic code never branches on an entry's name; the CLI's choices come from them."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from cprl_fast.attacks import ATTACKS
from cprl_fast.data import LOADERS
from cprl_fast.models import MODELS
from cprl_fast.models.registry import default_objective
from cprl_fast.ops._backend import BACKENDS
from cprl_fast.registry import Registry
from cprl_fast.train.objectives import OBJECTIVES

PACKAGE = Path(__file__).resolve().parents[1] / "cprl_fast"
REGISTRIES = {"model": MODELS, "dataset": LOADERS, "attack": ATTACKS, "objective": OBJECTIVES,
              "backend": BACKENDS}  # fmt: skip


@pytest.mark.parametrize("kind", list(REGISTRIES))
def test_one_kind_of_registry_with_did_you_mean(kind):
    registry = REGISTRIES[kind]
    assert isinstance(registry, Registry) and len(registry) >= 2
    name = next(iter(registry))
    with pytest.raises(ValueError, match=rf"unknown {kind} '{name}x'.*did you mean '{name}'"):
        registry.get(name + "x")


def test_no_generic_code_branches_on_an_entry_name():
    """``== "cprl"``-style comparisons against model or dataset names are what registries and
    declared capabilities replace; the registrations themselves are the only place a name is
    written."""
    names = set(MODELS) | set(LOADERS)
    alternatives = "|".join(map(re.escape, names))
    pattern = re.compile(rf"""(==|!=)\s*["']({alternatives})["']""")
    hits = [
        f"{path.relative_to(PACKAGE.parent)}:{n}: {line.strip()}"
        for path in PACKAGE.rglob("*.py")
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if pattern.search(line)
    ]
    assert not hits, "\n".join(hits)


def test_every_model_declares_a_registered_objective():
    for name in MODELS:
        assert default_objective(name) in OBJECTIVES, name


def test_no_literal_attack_list_outside_the_registry():
    """Suites are named in ``SUITES`` beside the attacks (with their properties); the library
    uses those names, never a literal list of attack names of its own."""
    import ast

    hits = []
    for folder in (PACKAGE, PACKAGE.parent / "cprl_fast_cli"):
        for path in folder.rglob("*.py"):
            if path == PACKAGE / "attacks" / "suite.py":
                continue
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, (ast.Tuple, ast.List, ast.Set)) and node.elts and all(
                    isinstance(e, ast.Constant) and e.value in ATTACKS for e in node.elts
                ):
                    hits.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno}")
    assert not hits, hits
