"""Every op forward and backward on odd shapes, both layouts, every backend the device has (and
the paths of the CUDA kernels' 16-byte packs and multi-block epilogue, ``CASES``): the
script ``bench/gpu_check.sh`` runs under compute-sanitizer (memcheck, racecheck). Each call is
also checked against the reference, so the sanitizer run doubles as a correctness run.

    compute-sanitizer --tool memcheck python -m bench.sanitize --device cuda
    python -m bench.sanitize --device cpu          # the same calls on the CPU (plumbing)
"""

from __future__ import annotations

import argparse

import torch

import cprl_fast
from cprl_fast.ops import SPECS
from cprl_fast.ops._backend import BACKENDS
from cprl_fast.ops.spec import unaligned

#: (shape, dtype, placement): odd shapes (single-element loops; NCHW rows of 8 lanes), NCHW rows
#: of 100 and 300 pixels (16 and 32 lanes a row); rows a multiple of 8 long in
#: both layouts (16-byte packs of every dtype), also one element off alignment; more than 4096
#: (sample, channel) pairs (rank_mask's offset gradient over several blocks; the hard rank's
#: radix sort in its largest block); and more than 4096 channels (the hard rank's bitonic sort
#: in global memory).
CASES = tuple(
    [(shape, torch.float32, layout) for shape in ((3, 5, 7, 9), (2, 33, 1, 3), (1, 70, 5, 5))
     for layout in ("contiguous", "channels_last")]
    + [(shape, torch.float32, "contiguous") for shape in ((2, 5, 10, 10), (2, 3, 15, 20))]
    + [((2, 16, 4, 6), dtype, placement) for dtype in (torch.float32, torch.bfloat16)
       for placement in ("contiguous", "channels_last", "unaligned")]
    + [(shape, torch.float32, "contiguous") for shape in ((2, 2400, 2, 2), (1, 5000, 1, 1))]
)  # fmt: skip


def run(device: torch.device) -> int:
    calls = 0
    backends = [b for b in ("native", "triton") if BACKENDS.get(b).serves(device.type)]
    if device.type == "cpu":
        backends = ["native"]
    for backend in backends:
        cprl_fast.set_backend(backend)
        for spec in SPECS.values():
            for variant in spec.variants:
                for shape, dtype, placement in CASES:
                    layout = "contiguous" if placement == "unaligned" else placement
                    args = spec.sample(shape, dtype=dtype, device=device, layout=layout,
                                       seed=calls, **variant)  # fmt: skip
                    args = list(unaligned(args) if placement == "unaligned" else args)
                    for i in spec.grad_args:
                        args[i] = args[i].detach().requires_grad_(True)
                    outs = spec.call(spec.public, tuple(args))
                    want = spec.call(spec.reference, tuple(args))
                    torch.testing.assert_close(outs, want, **spec.tolerance(dtype, variant))
                    if spec.grad_args:
                        torch.autograd.backward(outs, [torch.ones_like(o) for o in outs])
                    calls += 1
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    cprl_fast.set_backend("auto")
    print(f"sanitize: {calls} op calls (forward and backward) on {device}, backends {backends}")
    return calls


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawTextHelpFormatter)  # fmt: skip
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    run(torch.device(parser.parse_args(argv).device))


if __name__ == "__main__":
    main()
