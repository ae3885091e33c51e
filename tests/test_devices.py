"""cprl_fast.devices: which devices get pinned host data, and copies that leave the source
alone and give the same values (on a GPU: without a host synchronisation)."""

from __future__ import annotations

import pytest
import torch

from cprl_fast.devices import pins, to_device


def test_only_cuda_devices_get_pinned_data():
    assert pins("cuda") and pins("cuda:1") and pins(torch.device("cuda", 0))
    assert not pins("cpu") and not pins(torch.device("meta"))


def test_a_copy_to_the_cpu_or_another_device_keeps_the_values_and_the_source():
    t = torch.arange(6.0).view(2, 3)
    assert torch.equal(to_device(t, "cpu"), t)
    meta = to_device(t, "meta")
    assert meta.device.type == "meta" and meta.shape == t.shape
    assert not t.is_pinned()


def test_a_copy_to_cuda_makes_no_host_synchronisation():
    if not torch.cuda.is_available():
        pytest.skip("needs a GPU")
    t = torch.rand(1000)
    torch.cuda.set_sync_debug_mode("error")
    try:
        got = to_device(t, "cuda")
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert torch.equal(got.cpu(), t) and not t.is_pinned()
