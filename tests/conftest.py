"""Shared fixtures: which devices and backends the op tests run on."""

from __future__ import annotations

import importlib.util
import os
import random
import sys

import pytest
import torch

# Without a GPU, the Triton kernels run on CPU tensors in Triton's interpreter, which must be
# switched on before triton is first imported.
if not torch.cuda.is_available() and "triton" not in sys.modules:
    os.environ.setdefault("TRITON_INTERPRET", "1")

import cprl_fast

HAS_TRITON = importlib.util.find_spec("triton") is not None
INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"


def _backends() -> list[tuple[str, str]]:
    """(device, backend) pairs to test: native CPU always, Triton on CPU under the interpreter;
    native CUDA and Triton on CUDA where a GPU is present."""
    pairs = [("cpu", "native")]
    if HAS_TRITON and INTERPRETED:
        pairs.append(("cpu", "triton"))
    if torch.cuda.is_available():
        if cprl_fast.has_cuda_kernels():
            pairs.append(("cuda", "native"))
        if HAS_TRITON:
            pairs.append(("cuda", "triton"))
    return pairs


BACKENDS = _backends()
BACKEND_IDS = [f"{d}-{b}" for d, b in BACKENDS]


@pytest.fixture(scope="session", autouse=True)
def _builtin_cache(tmp_path_factory):
    """The built-in data of every test (and of the commands it runs) in the session's own
    folder, where the user has not set one: a test never writes into ``~/.cache``."""
    from data_fixtures import shared_builtin_root

    with pytest.MonkeyPatch.context() as mp:
        if "CPRL_FAST_CACHE" not in os.environ:
            mp.setenv("CPRL_FAST_CACHE", str(shared_builtin_root(tmp_path_factory)))
        yield


@pytest.fixture(autouse=True)
def _seeded():
    """Every test starts from the same global random state (torch's and Python's; numpy's
    legacy global state is not used, ruff's NPY002), so that its draws do not depend on which
    tests ran before it: a test that passes once passes again."""
    random.seed(0)
    torch.manual_seed(0)


@pytest.fixture(params=BACKENDS, ids=BACKEND_IDS)
def device_backend(request):
    """Runs the test once per (device, backend), with that backend selected."""
    device, backend = request.param
    previous = cprl_fast.get_backend()
    cprl_fast.set_backend(backend)
    yield torch.device(device), backend
    cprl_fast.set_backend(previous)


@pytest.fixture
def device(device_backend):
    return device_backend[0]


def pytest_report_header(config):
    return (
        f"torch {torch.__version__}, cprl_fast CUDA kernels built: {cprl_fast.has_cuda_kernels()}, "
        f"GPU: {torch.cuda.is_available()}, TRITON_INTERPRET={os.environ.get('TRITON_INTERPRET')}"
    )


#: The slow tier's longest files, longest first (seconds of each in one run of the tier on the
#: 2-core VM, 2026-12-07: 221, 204, 184, 150, 131, 111; the next was 93). Under pytest-xdist
#: they are handed out first (.ci/run: ``--dist loadfile --no-loadscope-reorder``), so that no
#: worker starts one of them when the others are nearly done.
LONGEST_FILES = ("test_reproduce.py", "test_cuda_emulated.py", "test_gpu_check.py",
                 "test_cli_errors.py", "test_io.py", "test_study_gpu.py")  # fmt: skip


def pytest_collection_modifyitems(config, items):
    """Float64 gradcheck (and gradgradcheck) through Triton's interpreter takes 3-7 s a case on
    the 2-core VM, even
    at its smaller shape (``op_testing.gradcheck_shape``): those cases are in the slow tier
    (``-m slow``); the native CPU cases stay in the fast one. In an xdist worker, the files of
    :data:`LONGEST_FILES` come first (a stable sort: the rest keep their order)."""
    for item in items:
        if (getattr(item, "originalname", "") in ("test_gradcheck", "test_gradgradcheck")
                and "cpu-triton" in item.name):  # fmt: skip
            item.add_marker(pytest.mark.slow)
    if hasattr(config, "workerinput"):
        rank = {name: k for k, name in enumerate(LONGEST_FILES)}
        items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """A run folder (best.pt, last.pt) of a plain ResNet-18 trained for two steps at 32 px on the
    built-in data, shared by every test that loads, scores or exports a checkpoint."""
    from data_fixtures import train_tiny_run

    return train_tiny_run(tmp_path_factory, 32, model="resnet", max_steps=2)


@pytest.fixture(scope="session")
def tiny_metric(tiny_run):
    """The tiny run's best.pt as a metric."""
    return cprl_fast.create_metric(tiny_run / "best.pt")
