"""Packaging: an isolated build (plain ``pip install .``) stops at once with one line saying how
to install, instead of downloading a second torch and building against it; an extension that is
missing or was built against another torch release is refused at import with one line saying
how to rebuild it."""

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


#: Run in a fresh interpreter: ``import cprl_fast`` with its extension replaced, case by case, by
#: one that is missing, one that fails to load as a build for another torch does, and one built
#: against another release; prints each case's error.
_FAKE_EXTENSIONS = """
import importlib.abc, importlib.machinery, sys
import torch

class Fake(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def __init__(self, run):
        self.run = run
    def find_spec(self, name, path, target=None):
        if name == "cprl_fast._C":
            return importlib.machinery.ModuleSpec(name, self)
    def create_module(self, spec):
        return None
    def exec_module(self, module):
        self.run(module)

def undefined_symbol(module):
    raise ImportError("/x/_C.so: undefined symbol: _ZN5torch8autograd4Node17release_resourcesEv")

def other_release(module):
    module.torch_version = "2.5.1"

def other_patch(module):  # the same release: past the check (to fail later, on a missing op)
    major, minor = torch.__version__.split(".")[:2]
    module.torch_version = f"{major}.{minor}.99"

for case, fake in (("missing", None), ("symbol", undefined_symbol), ("release", other_release),
                   ("patch", other_patch)):
    if fake is None:
        sys.modules["cprl_fast._C"] = None
    else:
        sys.modules.pop("cprl_fast._C", None)
        sys.meta_path.insert(0, Fake(fake))
    try:
        import cprl_fast
    except Exception as e:
        print(case, "|", str(e).replace("\\n", " "))
    for name in [m for m in sys.modules if m.startswith("cprl_fast")]:
        del sys.modules[name]
    if fake is not None:
        sys.meta_path.pop(0)
"""


def test_an_extension_missing_or_built_for_another_torch_is_one_line_saying_how_to_rebuild():
    import torch

    import cprl_fast

    # the real build says which torch it was built against: this one
    assert cprl_fast._C.torch_version == torch.__version__.split("+")[0]
    r = subprocess.run([sys.executable, "-c", _FAKE_EXTENSIONS], cwd=ROOT, capture_output=True,
                       text=True, timeout=120)  # fmt: skip
    assert r.returncode == 0, r.stderr
    said = dict(line.split(" | ", 1) for line in r.stdout.splitlines())
    assert set(said) == {"missing", "symbol", "release", "patch"}, r.stdout
    assert "built against" not in said["patch"]  # it failed later, on the missing ops
    rebuild = "pip install --no-build-isolation -e ."
    assert "is not built" in said["missing"] and rebuild in said["missing"]
    assert f"does not load with torch {torch.__version__}" in said["symbol"]
    assert "undefined symbol: _ZN5torch8autograd4Node" in said["symbol"]
    assert rebuild in said["symbol"]
    assert f"built against torch 2.5.1 but runs with torch {torch.__version__}" in said["release"]
    assert rebuild in said["release"]
