"""The installed distribution's version (``pyproject.toml``'s, read from the package metadata):
one definition, read by the package and by the model cards the trainer writes; and how a torch
version is compared where a feature depends on it."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("cprl-fast")
except PackageNotFoundError:  # a source tree on sys.path that was never installed
    __version__ = "0+unknown"


def torch_release(version: str) -> tuple[int, int]:
    """``"2.14.1+cu130"`` -> ``(2, 14)``: the part of a torch version that its C++ ABI and its
    features follow (an extension built for another release may load and then misread torch's
    structures)."""
    major, minor = version.split("+")[0].split(".")[:2]
    return int(major), int(minor)
