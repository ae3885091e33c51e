"""The names and options the command line offers, as a static listing (``catalog.json``), so
that ``cprl-fast --help``, every command's ``--help`` and every argument error answer without
importing torch (about 2-3 s of a cold start on the 2-core VM).

The listing is generated from the registries by :mod:`cprl_fast_cli.make_catalog`;
``tests/test_cli.py`` fails when the committed file differs from what the registries hold now,
and says how to regenerate it (``python -m cprl_fast_cli.make_catalog --write``).
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

PATH = Path(__file__).with_name("catalog.json")


@functools.cache
def load() -> dict[str, Any]:
    """The committed listing (read once per process)."""
    return json.loads(PATH.read_text())
