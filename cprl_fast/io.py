"""File outputs, written once: every checkpoint, split file, report, table and score file goes
through :func:`atomic_write` (a temporary file beside the target, then ``os.replace``), so a
crash or a kill leaves either the old file or the new one, never half of one; and the rules
that make outputs safe to open:

- files take the user's umask (as ``open`` would create them), not ``mkstemp``'s 0600;
- a temporary left by an interrupted write (``.<name>.<pid>.<random>.tmp``) is removed by the
  next write into the same folder once its process is gone (:func:`remove_stale_temporaries`);
- JSON is standard JSON: a NaN or infinite float is written as ``null``, never as a
  ``NaN``/``Infinity`` token that strict parsers refuse;
- CSV cells that a spreadsheet would run as a formula (a leading ``=``, ``+``, ``-``, ``@``,
  tab or carriage return) are prefixed with ``'`` as OWASP recommends (:func:`csv_cell`);
- names printed in messages have their control characters escaped (:func:`printable`);
- an existing output is replaced only when the user says so (:func:`check_output`).
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import re
import secrets
import stat
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

#: The name of a temporary of :func:`temporary_path`: ``.<name>.<pid>.<random>.tmp[.suffix]``.
TEMPORARY = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)\.[0-9a-f]{8}\.tmp(?P<suffix>\.\w+)?$")
_UMASK_LOCK = threading.Lock()


def umask() -> int:
    """The process's umask (read without changing it for other threads)."""
    with _UMASK_LOCK:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def temporary_path(path: str | Path, suffix: str = "") -> Path:
    """A fresh temporary name beside ``path``: ``.<name>.<pid>.<random>.tmp<suffix>``."""
    path = Path(path)
    return path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp{suffix}")


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


#: The temporary file safetensors' ``save_file`` writes beside its target (Rust ``tempfile``).
_SAFETENSORS_TEMPORARY = re.compile(r"^\.tmp[A-Za-z0-9]{6}$")


def _safetensors_leftover(path: Path) -> bool:
    """Whether ``path`` is an interrupted safetensors write: named as its library's temporary
    and starting with a safetensors header (a little-endian length, then a JSON object)."""
    if not (_SAFETENSORS_TEMPORARY.match(path.name) and path.is_file()):
        return False
    with open(path, "rb") as fh:
        head = fh.read(9)
    return len(head) == 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < 1 << 27


def remove_stale_temporaries(folder: str | Path) -> list[Path]:
    """Removes the temporaries of interrupted writes in ``folder`` whose process is gone, and
    safetensors files that its library's own ``save_file`` left half-written (earlier versions
    wrote through it); returns them. A temporary of a live process (a concurrent writer) is
    kept."""
    removed = []
    folder = Path(folder)
    if not folder.is_dir():
        return removed
    for p in folder.iterdir():
        m = TEMPORARY.match(p.name)
        stale = m and not _pid_alive(int(m["pid"])) and (p.is_file() or p.is_symlink())
        if stale or _safetensors_leftover(p):
            p.unlink(missing_ok=True)
            removed.append(p)
    return removed


def atomic_write(path: str | Path, write: Callable[[str], None], suffix: str = "") -> Path:
    """Calls ``write(tmp_path)`` on a temporary file in ``path``'s folder (created if needed),
    then renames it to ``path``, with the permissions a new file gets under the user's umask.
    On any error the temporary file is removed; stale temporaries of earlier interrupted
    writes in the folder are removed first. ``suffix``: the temporary's file suffix, for
    writers that want one (``.pt2``). A set of one: :func:`atomic_write_set`."""
    return atomic_write_set({Path(path): write}, suffix)[0]


def atomic_write_set(writes: dict[Path, Callable[[str], None]], suffix: str = "") -> list[Path]:
    """Writes a set of files that belong together (``{path: write}``): every file to its
    temporary first, then all renamed into place, so an error or a kill while writing leaves
    the old set whole. Temporaries are removed on error (and stale ones by the next write)."""
    done: dict[Path, Path] = {}
    try:
        for path, write in writes.items():
            path = Path(path)
            path.parent.mkdir(parents=True, exist_ok=True)
            remove_stale_temporaries(path.parent)
            tmp = temporary_path(path, suffix)
            done[path] = tmp
            write(str(tmp))
            os.chmod(tmp, 0o666 & ~umask())
    except BaseException:
        for tmp in done.values():
            tmp.unlink(missing_ok=True)
        raise
    for path, tmp in done.items():
        os.replace(tmp, path)
    return list(done)


def write_text_atomic(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def write_bytes_atomic(path: str | Path, data: bytes) -> Path:
    return atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))


def finite_json(data: object) -> object:
    """``data`` with every NaN or infinite float replaced by ``None`` (JSON ``null``)."""
    if isinstance(data, float):
        return data if math.isfinite(data) else None
    if isinstance(data, dict):
        return {k: finite_json(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [finite_json(v) for v in data]
    return data


def json_text(data: object, indent: int | None = 1) -> str:
    """Standard JSON (non-finite floats as ``null``) with a final newline."""
    return json.dumps(finite_json(data), indent=indent, allow_nan=False) + "\n"


def write_json_atomic(path: str | Path, data: object) -> Path:
    """JSON with one-space indentation and a final newline; non-finite floats as ``null``."""
    return write_text_atomic(path, json_text(data))


#: The largest JSON file :func:`read_json` reads: far above any this library writes (a study's
#: report.json is about 100 kB, a split file of 10,000 images about 1 MB).
MAX_JSON_BYTES = 64 << 20


def parse_json(text: str | bytes) -> object:
    """JSON text -> its value. Raises ``ValueError`` for text that is not JSON, including text
    nested deeper than Python's recursion limit (``json`` raises ``RecursionError`` there)."""
    try:
        return json.loads(text)
    except RecursionError:
        raise ValueError("nested too deeply to parse") from None


class NotARegularFile(OSError, ValueError):
    """A path to read that is a folder, FIFO, device or socket: an ``OSError`` for file
    handling, a ``ValueError`` for the checks of inputs."""


def _open_regular(path: str | Path, what: str, flags: int, mode: int = 0o666) -> int:
    """An fd of ``path`` opened with ``flags`` and ``O_NONBLOCK`` (an ordinary open of a FIFO
    waits for the other side), if it is a regular file (checked with ``fstat`` on the open fd,
    so nothing can be swapped in between); errors name ``what`` and the file (escaped:
    :func:`printable`)."""
    name = printable(str(path))
    try:
        fd = os.open(path, flags | getattr(os, "O_NONBLOCK", 0), mode)
    except FileNotFoundError:
        raise FileNotFoundError(f"{what} {name} is missing") from None
    except OSError as err:
        if err.errno == errno.ELOOP and flags & getattr(os, "O_NOFOLLOW", 0):
            raise NotARegularFile(f"{what} {name} is a symbolic link: this file is never "
                                  "followed to another place (remove the link)") from None
        if err.errno != errno.ENXIO:  # ENXIO: a FIFO opened to write, with no reader
            raise
        fd = None
    if fd is None or not stat.S_ISREG(os.fstat(fd).st_mode):
        if fd is not None:
            os.close(fd)
        raise NotARegularFile(f"{what} {name} is not a regular file (a folder, FIFO, device "
                              "or socket is never read or written)")  # fmt: skip
    return fd


def open_regular_file(path: str | Path, what: str) -> BinaryIO:
    """``path`` opened for reading in binary, if it is a regular file. A folder, FIFO, device or
    socket is refused without blocking (:func:`_open_regular`: reading a device may never
    end); errors name ``what`` and the file (``FileNotFoundError``, :class:`NotARegularFile`)."""
    return os.fdopen(_open_regular(path, what, os.O_RDONLY), "rb")


def open_own_file(path: str | Path, what: str, flags: int = os.O_RDWR | os.O_CREAT,
                  mode: int = 0o666) -> int:  # fmt: skip
    """An fd of a file this library keeps in a folder the user named (a lock, a training log),
    opened with ``flags`` and created (``mode``, less the umask) where ``flags`` say so. It
    must be a regular file and is never reached through a symbolic link (``O_NOFOLLOW``): a
    link planted in a shared folder (``/tmp/run/.lock -> ~/.bashrc``) would otherwise have us
    truncate or append to its target. A FIFO is refused without blocking. Raises
    ``FileNotFoundError`` or :class:`NotARegularFile` naming ``what`` and the file."""
    return _open_regular(path, what, flags | getattr(os, "O_NOFOLLOW", 0), mode)


def read_regular_file(path: str | Path, what: str, max_bytes: int,
                      follow_links: bool = True) -> bytes:  # fmt: skip
    """The bytes of ``path``, a regular file (:func:`open_regular_file`) of at most
    ``max_bytes`` (a larger one is a ``ValueError`` naming it). ``follow_links=False``: a file
    this library keeps, opened as :func:`open_own_file` opens it (never through a link)."""
    if follow_links:
        fh = open_regular_file(path, what)
    else:
        fh = os.fdopen(open_own_file(path, what, os.O_RDONLY), "rb")
    with fh:
        size = os.fstat(fh.fileno()).st_size
        if size > max_bytes:
            raise ValueError(f"{what} {printable(str(path))} has {size} bytes, more than the "
                             f"{max_bytes} such a file can hold")  # fmt: skip
        return fh.read(max_bytes + 1)


def read_json(path: str | Path, what: str = "JSON file") -> object:
    """A JSON file of at most :data:`MAX_JSON_BYTES` (:func:`read_regular_file`); a missing
    one is a ``FileNotFoundError``, and one that is not a regular file, too large, not UTF-8,
    malformed or nested too deeply a ``ValueError``, each naming it."""
    data = read_regular_file(path, what, MAX_JSON_BYTES)
    try:
        return parse_json(data.decode("utf-8"))
    except UnicodeDecodeError as err:
        raise ValueError(f"{what} {path} is not UTF-8 text (byte {err.start})") from None
    except ValueError as err:
        raise ValueError(f"{what} {path} is not valid JSON ({err})") from None


#: First characters that make a spreadsheet treat a CSV cell as a formula (OWASP).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(text: str) -> str:
    """A text cell safe to open in a spreadsheet: prefixed with ``'`` if it starts with one of
    :data:`FORMULA_STARTS` (OWASP's CSV injection rule)."""
    return "'" + text if text.startswith(FORMULA_STARTS) else text


def markdown_cell(text: str) -> str:
    """A name safe in a markdown table row or heading: control characters escaped
    (:func:`printable`: a newline would end the row) and ``|`` written ``\\|`` (it would
    split the cell)."""
    return printable(text).replace("|", "\\|")


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def printable(text: str) -> str:
    """``text`` with control characters (and bidirectional overrides) escaped as ``\\xNN`` /
    ``\\uNNNN``, for one-line messages that cannot move the cursor or hide text."""
    return _CONTROL.sub(lambda m: m[0].encode("unicode_escape").decode("ascii"), text)


def check_output(path: str | Path, overwrite: bool, option: str = "--out",
                 suffixes: tuple[str, ...] = ()) -> Path:  # fmt: skip
    """Checks an output path before any work: its suffix (one of ``suffixes``), that it is not
    a folder, that an existing file is replaced only with ``overwrite`` and that its folder
    exists or can be created and is writable. Raises ValueError, FileExistsError or
    PermissionError naming ``option``."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{option} {printable(str(path))} is a folder, not a file")
    if suffixes and path.suffix.lower() not in suffixes:
        endings = " or ".join(suffixes)
        raise ValueError(f"{option} must end in {endings}, got {printable(str(path))}")
    if path.exists() and not overwrite:
        raise FileExistsError(f"{option} {printable(str(path))} exists: pass --overwrite to "
                              "replace it")  # fmt: skip
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise NotADirectoryError(f"{option} {printable(str(path))}: {parent} is not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise PermissionError(f"{option} {printable(str(path))}: folder {parent} is not writable")
    return path


@contextlib.contextmanager
def file_lock(path: str | Path) -> Iterator[None]:
    """An exclusive lock between processes on ``path`` (created if needed), held for the
    ``with`` block; a second process blocks until the first leaves it (POSIX ``flock``: the
    lock goes with the process if it dies). The file is opened as :func:`open_own_file` opens
    it (never through a symbolic link). Where ``fcntl`` does not exist (Windows) it does
    not lock."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = open_own_file(path, "lock file")
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
