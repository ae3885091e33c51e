"""Packaging: an isolated build (plain ``pip install .``) stops at once with one line saying how
to install, instead of downloading a second torch and building against it; an extension that is
missing or was built against another torch release is refused at import with one line saying
how to rebuild it; ``cprl-fast --version`` and ``cprl-fast info`` say what is installed."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

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
#: one that is missing, one that fails to load as a build for another torch does, one built
#: against another release and one against another patch of this release; prints each case's
#: error, then what ``cprl-fast info`` prints without the extension.
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

# and a command of the CLI, which imports the package when it runs
import contextlib, io
from cprl_fast_cli import main
sys.modules["cprl_fast._C"] = None
err = io.StringIO()
with contextlib.redirect_stderr(err):
    status = main(["info"])
print("cli", "|", status, err.getvalue().replace("\\n", " / "))
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
    assert set(said) == {"missing", "symbol", "release", "patch", "cli"}, r.stdout
    # the CLI prints the import's error as its one line, with status 1 (not a misuse)
    assert said["cli"] == f"1 cprl-fast info: {said['missing']} / "
    assert "built against" not in said["patch"]  # it failed later, on the missing ops
    rebuild = "pip install --no-build-isolation -e ."
    assert "is not built" in said["missing"] and rebuild in said["missing"]
    assert f"does not load with torch {torch.__version__}" in said["symbol"]
    assert "undefined symbol: _ZN5torch8autograd4Node" in said["symbol"]
    assert rebuild in said["symbol"]
    assert f"built against torch 2.5.1 but runs with torch {torch.__version__}" in said["release"]
    assert rebuild in said["release"]


def test_machine_names_the_cpu_its_kernels_and_a_cuda_devices_gpu(monkeypatch):
    import builtins
    import platform

    import torch

    from cprl_fast import installation

    said = installation.machine()
    assert said["CPU kernels"] == f"ATen {torch.backends.cpu.get_cpu_capability()}"
    assert said["threads"] == str(torch.get_num_threads()) and "GPU" not in said
    for name in ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA"):
        monkeypatch.delenv(name, raising=False)
    assert "oneDNN cap" not in installation.machine()
    monkeypatch.setenv("DNNL_MAX_CPU_ISA", "AVX2")  # oneDNN's older name
    assert installation.machine()["oneDNN cap"] == "AVX2"
    if Path("/proc/cpuinfo").is_file():  # Linux: the first model name line
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        names = [ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("model name")]
        assert said["CPU"] == (names[0] if names else installation.cpu_name())
    real_open = builtins.open

    def no_cpuinfo(path, *args, **kwargs):
        if str(path) == "/proc/cpuinfo":
            raise PermissionError(path)
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", no_cpuinfo)
    monkeypatch.setattr(platform, "processor", lambda: "")
    assert installation.cpu_name() == (platform.machine() or "unknown")
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: f"GPU of {device}")
    assert installation.machine("cuda:1")["GPU"] == "GPU of cuda:1"


def test_version_and_info_without_a_checkpoint_say_what_is_installed(capsys):
    from importlib.metadata import version

    import torch

    import cprl_fast
    from cprl_fast_cli import main

    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out == f"cprl-fast {version('cprl-fast')}\n"
    assert main(["info", "--json"]) == 0
    said = json.loads(capsys.readouterr().out)
    assert said == cprl_fast.environment()
    assert said["cprl_fast"] == cprl_fast.__version__
    assert said["torch"].startswith(f"{torch.__version__} (CUDA ")
    kernels = "with" if cprl_fast.has_cuda_kernels() else "without"
    built = f"built for torch {cprl_fast._C.torch_version}, {kernels} the CUDA kernels"
    assert said["extension"] == built
    assert said["threads"] == str(torch.get_num_threads())
    assert main(["info"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(": ", 1)[0].strip() for line in lines] == list(said)
