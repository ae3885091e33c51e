"""cprl_fast: fast no-reference image quality assessment with CPRL (arXiv:2404.19567).

Importing the package loads the native extension ``cprl_fast._C``, which registers the
``torch.ops.cprl_fast`` operators; :mod:`cprl_fast.ops` adds their autograd and fake kernels.
"""

import os

import torch

# The AOTInductor packages of `cprl-fast export --format pt2` check their inputs' shapes only in
# a process where this is set; loading one needs `import cprl_fast` first (the custom op), so it
# is set here unless the user set it (docs/decisions.md).
os.environ.setdefault("AOTI_RUNTIME_CHECK_INPUTS", "1")

from cprl_fast.version import __version__ as __version__
from cprl_fast.version import torch_release

#: What to do about an extension that is missing or was built against another torch.
_REBUILD = "build it against this torch (in the source tree: pip install --no-build-isolation -e .)"

try:
    from cprl_fast import _C  # registers torch.ops.cprl_fast
except ModuleNotFoundError as e:
    if e.name != "cprl_fast._C":
        raise
    raise ImportError(f"cprl_fast's extension cprl_fast._C is not built; {_REBUILD}") from None
except ImportError as e:  # built against another torch: an undefined symbol, as a rule
    why = (str(e).splitlines() or [type(e).__name__])[0]
    raise ImportError(
        f"cprl_fast's extension cprl_fast._C does not load with torch {torch.__version__} "
        f"({why}); {_REBUILD}"
    ) from e
_built_with = getattr(_C, "torch_version", None)  # None: built before it said (2026-12-07)
if _built_with is None or torch_release(_built_with) != torch_release(torch.__version__):
    raise ImportError(
        f"cprl_fast's extension cprl_fast._C was built against torch {_built_with or 'unknown'} "
        f"but runs with torch {torch.__version__}; {_REBUILD}"
    )

from cprl_fast import nn, ops, reference  # noqa: E402
from cprl_fast.installation import cpu_huge_pages, environment, has_cuda_kernels  # noqa: E402
from cprl_fast.nn import CPRLActivation, intervention  # noqa: E402
from cprl_fast.ops import get_backend, set_backend  # noqa: E402

__all__ = [
    "CPRLActivation",
    "cpu_huge_pages",
    "create_metric",
    "environment",
    "get_backend",
    "has_cuda_kernels",
    "intervention",
    "load_model",
    "nn",
    "ops",
    "reference",
    "set_backend",
]


#: Names served from :mod:`cprl_fast.score` on first use (PEP 562), so that ``import cprl_fast``
#: does not import the scoring stack (Pillow, torchvision's transforms) and the functions keep
#: their one signature and docstring there.
_FROM_SCORE = ("create_metric", "load_model")


def __getattr__(name: str):
    if name in _FROM_SCORE:
        from cprl_fast import score

        return getattr(score, name)
    raise AttributeError(f"module 'cprl_fast' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_FROM_SCORE})
