"""Packaging: an isolated build (plain ``pip install .``) stops at once with one line saying how
to install, instead of downloading a second torch and building against it."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_build_requires_no_torch_and_setup_says_how_to_install():
    requires = re.search(r"^requires = \[(.*)\]$", (ROOT / "pyproject.toml").read_text(), re.M)
    assert requires and "setuptools" in requires.group(1) and "torch" not in requires.group(1)
    code = ("import sys; sys.modules['torch'] = None; sys.argv = ['setup.py', '--name']; "
            "import runpy; runpy.run_path('setup.py', run_name='__main__')")  # fmt: skip
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 1
    assert "pip install --no-build-isolation ." in r.stderr and len(r.stderr.splitlines()) == 1
