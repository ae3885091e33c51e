"""The ``cprl-fast`` command line, a front end that imports no torch until a command runs.

``cprl-fast --help``, every command's ``--help`` and every argument error are answered from
the parser alone, whose choices and help come from a static listing of the registries
(:mod:`cprl_fast_cli.catalog`, checked against them by the tests); a command's work imports
:mod:`cprl_fast` (and with it torch and the native ops) only once its arguments parsed. It is a
package of its own because importing anything under ``cprl_fast`` first runs
``cprl_fast/__init__.py``, which loads torch and registers the ops.

One module per command, each with ``add_parser(subparsers)`` and ``run(args) -> exit status``;
options that several commands share are defined once in :mod:`cprl_fast_cli.options`.

    cprl-fast train --dataset builtin --model cprl --arch resnet18 --epochs 2 --image-size 64
    python -m cprl_fast_cli --help
"""

from __future__ import annotations

import argparse
import importlib
import logging
import re
import sys
import warnings
from types import ModuleType

from cprl_fast_cli.catalog import load
from cprl_fast_cli.options import UserError

__all__ = ["COMMANDS", "LONG_COMMANDS", "UserError", "command", "main", "parser"]

#: The commands, each the module ``cprl_fast_cli.<name>`` (``add_parser``, ``run``), in the
#: order ``--help`` lists them.
COMMANDS = ("train", "evaluate", "reproduce", "demo", "audit", "score", "info", "study", "export",
            "synthesize", "pretrain")

#: Commands that print which thread count they use (score, info and export print output that
#: other programs read).
LONG_COMMANDS = ("train", "evaluate", "reproduce", "demo", "audit", "study", "pretrain")


class Parser(argparse.ArgumentParser):
    """argparse with argument errors as one line (the command, the error, where help is) and
    exit status 2, like every other user error; subcommands' parsers are of this class too."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def parser() -> Parser:
    """The whole command line's parser (builds without importing torch)."""
    p = Parser(prog="cprl-fast",
               description="Fast no-reference image quality assessment with CPRL: train, "
               "attack, audit, certify, score and export quality models.")  # fmt: skip
    p.add_argument("--version", action="version", version=f"cprl-fast {_version()}",
                   help="print the package's version and exit (with torch's, the "
                   "extension's and the GPU's: cprl-fast info)")  # fmt: skip
    p.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    p.add_argument("--threads", type=int, default=None,
                   help=f"CPU threads for torch, at most {load()['threads_per_core']} per "
                   "core (default: OMP_NUM_THREADS if set, else at most the cores this process "
                   "may use, cgroup quota included)")  # fmt: skip
    sub = p.add_subparsers(dest="command", required=True)
    for name in COMMANDS:
        command(name).add_parser(sub)
    return p


def _version() -> str:
    """The installed distribution's version, read as :mod:`cprl_fast.version` reads it (importing
    that module would import torch, through the package)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("cprl-fast")
    except PackageNotFoundError:
        return "0+unknown"


def command(name: str) -> ModuleType:
    """The module of the command ``name``."""
    return importlib.import_module(f"cprl_fast_cli.{name}")


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    args.command_line = sys.argv[1:] if argv is None else list(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        from PIL import Image

        from cprl_fast.threads import set_threads

        # the pixel limit (--max-pixels) decides whether an image is read: Pillow's warning for
        # an image between its MAX_IMAGE_PIXELS and twice that would only add a line to stderr
        warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
        note = set_threads(args.threads)
        if args.command in LONG_COMMANDS:  # the others print machine-readable output
            print(note, flush=True)
        return command(args.command).run(args)
    except (UserError, ValueError, FileNotFoundError, OSError, TypeError, RuntimeError,
            FloatingPointError, ImportError) as err:  # fmt: skip
        if args.debug:
            raise
        line = error_line(err)
        try:
            from cprl_fast.io import printable

            line = printable(line)
        except ImportError:  # the package does not import: the line is that import's error
            pass
        print(f"cprl-fast {args.command}: {line}", file=sys.stderr)
        # a run stopped at a non-finite loss (train, pretrain) failed, and a package that does
        # not import (an extension built for another torch) fails every command; neither was
        # misused
        return 1 if isinstance(err, (FloatingPointError, ImportError)) else 2


#: How torch's DataLoader re-raises an error of a worker process: "Caught <type> in DataLoader
#: worker process <k>.", then "Original Traceback ...", whose last line is "<type>: <message>".
_WORKER_ERROR = re.compile(r"^Caught \w+ in DataLoader worker process \d+\.\n.*?"
                           r"(?:^|\n)[\w.]+: (?P<message>[^\n]*)\n?$", re.DOTALL)


#: The longest message of several lines the command line prints whole; a longer one (a
#: compiler's log, say) is cut to its first line, which says how many lines were left out.
MAX_ERROR_CHARS = 1000


def error_line(err: BaseException) -> str:
    """The one line the command line prints for ``err``: its message with each newline written
    as ``\\n`` (a file's name may hold one: cut at the first newline, ``a\\nb.pt`` was
    named ``a``), or, past :data:`MAX_ERROR_CHARS`, its first line and how many lines were left
    out (``--debug`` shows them); for an error a DataLoader worker raised, the original
    message (which names the file) rather than torch's "Caught ...". Other control characters
    are escaped by the caller (:func:`cprl_fast.io.printable`)."""
    text = str(err)
    if not text:
        return type(err).__name__
    worker = _WORKER_ERROR.match(text)
    if worker:
        return worker["message"]
    if len(text) <= MAX_ERROR_CHARS or "\n" not in text:
        return text.replace("\n", "\\n")
    first, _, rest = text.partition("\n")
    return f"{first} ({rest.count(chr(10)) + 1} more lines: --debug shows them)"
