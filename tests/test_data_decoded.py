"""Images decoded once per evaluation (cprl_fast/data/decoded.py): each item is read from the
dataset once within the byte budget, reads return copies, and an audit reads every image once
and scores the clean images once."""

from __future__ import annotations

import inspect

import pytest
import torch

from cprl_fast.data import DecodedOnce, decoded_once
from cprl_fast.data.decoded import underlying


class Counted(torch.utils.data.Dataset):
    """``n`` images ``[3, 4, 4]`` float32 (64 + 4 bytes per item with its score), counting
    reads per index; ``name`` stands for a dataset's own attributes."""

    name = "counted"

    def __init__(self, n: int = 10):
        g = torch.Generator().manual_seed(0)
        self.x, self.y = torch.rand(n, 3, 4, 4, generator=g), torch.rand(n, generator=g)
        self.reads = [0] * n

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int):
        self.reads[i] += 1
        return self.x[i], self.y[i]


ITEM_BYTES = (3 * 4 * 4 + 1) * 4


class Brightness(torch.nn.Module):
    """Scores images ``[N, 3, H, W]`` by their mean brightness: ``[N]``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(6 * (x.mean(dim=(1, 2, 3)) - 0.5))


def _passes(dataset, times: int = 2, batch_size: int = 3) -> list[torch.Tensor]:
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size)
    return [torch.cat([x for x, _ in loader]) for _ in range(times)]


def test_each_item_is_read_once_and_every_pass_sees_the_same_images():
    data = Counted()
    first, second = _passes(DecodedOnce(data))
    assert data.reads == [1] * len(data)
    assert torch.equal(first, data.x) and torch.equal(second, data.x)


def test_items_past_the_budget_are_read_on_every_pass():
    data = Counted()
    kept = DecodedOnce(data, max_bytes=3 * ITEM_BYTES + 1)
    _, second = _passes(kept)
    assert data.reads == [1, 1, 1] + [2] * 7
    assert kept.nbytes == 3 * ITEM_BYTES and sorted(kept.kept) == [0, 1, 2]
    assert torch.equal(second, data.x)


def test_a_caller_that_changes_an_item_changes_nothing_kept():
    data = Counted()
    kept = DecodedOnce(data)
    x, _ = kept[0]
    x.zero_()  # the first read hands out the dataset's own tensor; the kept one is a copy
    again, _ = kept[0]
    again.fill_(7)
    assert torch.equal(kept[0][0], Counted().x[0])


def test_a_subset_read_by_a_loader_is_still_read_once():
    # Subset has __getitems__, which a DataLoader prefers: it must not be reached through the
    # wrapper (that would read every item around what is kept)
    data = Counted()
    subset = torch.utils.data.Subset(data, [1, 3, 5, 7])
    _passes(DecodedOnce(subset), times=3, batch_size=2)
    assert data.reads == [0, 1, 0, 1, 0, 1, 0, 1, 0, 0]


def test_attributes_indices_and_items_that_are_not_tensors():
    data = Counted()
    kept = decoded_once(data)
    assert decoded_once(kept) is kept and underlying(kept) is data and underlying(data) is data
    assert kept.name == "counted" and len(kept) == 10
    assert torch.equal(kept[-1][0], data.x[9]) and data.reads[9] == 1
    with pytest.raises(IndexError, match="index 10 is out of range for 10 items"):
        kept[10]
    with pytest.raises(ValueError, match="max_bytes must be an integer >= 0, got -1"):
        DecodedOnce(data, max_bytes=-1)
    words = DecodedOnce(["a", "b"])
    assert words[0] == "a" and words.kept == {} and words.nbytes == 0


def test_an_audit_reads_each_image_once_and_scores_it_clean_once(monkeypatch):
    from cprl_fast import evaluate
    from cprl_fast.audit import audit

    clean = []
    compute = evaluate.predictions
    signature = inspect.signature(compute)

    def counted(*args, **kwargs):
        call = signature.bind(*args, **kwargs).arguments
        if call["attack"] is None and call.get("memo") is None:  # computed, not remembered
            clean.append(1)
        return compute(*args, **kwargs)

    monkeypatch.setattr(evaluate, "predictions", counted)
    data = Counted(12)
    report = audit(Brightness(), data, eps=(2 / 255, 8 / 255), attacks=("fgsm", "pgd"),
                   batch_size=4, certify_sigmas=(0.1,), certify_n=20)  # fmt: skip
    assert data.reads == [1] * 12  # the input check, 2 eps x (clean + 2 attacks), the
    assert len(clean) == 1  # unbounded attacks and the certified rows: one read per image
    assert sorted(report.results) == [2 / 255, 8 / 255] and report.certified
