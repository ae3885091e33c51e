"""The installed distribution's version (``pyproject.toml``'s, read from the package metadata):
one definition, read by the package and by the model cards the trainer writes."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("cprl-fast")
except PackageNotFoundError:  # a source tree on sys.path that was never installed
    __version__ = "0+unknown"
