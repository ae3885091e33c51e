"""Images decoded once per evaluation, however many conditions read them.

An audit reads every image once per attack and budget (30 times for the default suite on a
CPRL model at four eps: the input check, 4 x (the clean pass and 6 attacks), the unbounded
attack); a study audits several models on the same images. Decoding and resizing a built-in
PNG to 224 px takes 2.0-2.4 ms of host time on a 2-core VM, about 15 s per audit of 250
images, time a GPU may spend waiting. :func:`decoded_once` keeps what a dataset returned, so
each image is decoded once, within a byte budget: items past it are decoded again on every
read, as before.

A dataset whose items are random (a training transform's crops) gives each kept image once,
so every condition sees the same version of it, which the paired comparisons between
conditions assume; an item past the budget is drawn again on each read, so evaluate with the
test transform (deterministic), as every command here does.
"""

from __future__ import annotations

import operator
import os

import torch


def _default_max_bytes() -> int:
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):  # no sysconf (Windows): the 2 GiB alone
        return 2 << 30
    return min(2 << 30, memory // 8)


#: The bytes of decoded items kept by default: 2 GiB, or an eighth of the machine's memory if
#: that is less (the 250 built-in images at 224 px take 150 MB as float32; KonIQ's 10,073 at
#: 512 x 384 px would take 24 GB, so most of those are decoded on every read).
MAX_BYTES = _default_max_bytes()


def _nbytes(item) -> int | None:
    """The bytes of an item's tensors; None if it is not a tuple or list of tensors (such an
    item is not kept)."""
    if not isinstance(item, (tuple, list)) or not all(isinstance(t, torch.Tensor) for t in item):
        return None
    return sum(t.numel() * t.element_size() for t in item)


class DecodedOnce(torch.utils.data.Dataset):
    """``dataset`` whose items (tuples of tensors, e.g. ``(image [3, H, W] float32, score [])``)
    are kept after their first read while their total stays within ``max_bytes``; the first
    items read are kept, since an evaluation reads the images in order, pass after pass. Each
    read returns fresh copies, so a caller that changes an item in place changes nothing kept.
    Attributes other than its own (``name``, ``split_info``, ``scores()``, ...) are the
    dataset's."""

    def __init__(self, dataset, max_bytes: int = MAX_BYTES):
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 0:
            raise ValueError(f"max_bytes must be an integer >= 0, got {max_bytes!r}")
        self.dataset = dataset
        self.max_bytes = max_bytes
        self.kept: dict[int, tuple] = {}
        self.nbytes = 0  #: bytes of the items kept

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        index = operator.index(index)
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} is out of range for {len(self)} items")
        kept = self.kept.get(index)
        if kept is not None:
            return tuple(t.clone() for t in kept)
        item = self.dataset[index]
        size = _nbytes(item)
        if size is not None and self.nbytes + size <= self.max_bytes:
            self.kept[index] = tuple(t.clone() for t in item)
            self.nbytes += size
        return item

    def __getattr__(self, name: str):
        # not the dataset's dunders (a DataLoader would call its __getitems__ and read around
        # what is kept), nor "dataset" before it is set (unpickling): no recursion
        if name == "dataset" or name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.dataset, name)

    def __repr__(self) -> str:
        return f"DecodedOnce({self.dataset!r}, {len(self.kept)} of {len(self)} kept)"


def decoded_once(dataset, max_bytes: int = MAX_BYTES) -> DecodedOnce:
    """``dataset`` with its items kept after their first read (:class:`DecodedOnce`); a
    dataset that already is one is returned as it is."""
    if isinstance(dataset, DecodedOnce):
        return dataset
    return DecodedOnce(dataset, max_bytes)


def underlying(dataset: torch.utils.data.Dataset) -> torch.utils.data.Dataset:
    """The dataset a :class:`DecodedOnce` reads (the same images), or ``dataset`` itself."""
    return dataset.dataset if isinstance(dataset, DecodedOnce) else dataset
