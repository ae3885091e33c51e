"""Every op forward and backward on odd shapes, both layouts, every backend the device has: the
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

SHAPES = ((3, 5, 7, 9), (2, 33, 1, 3), (1, 70, 5, 5))


def run(device: torch.device) -> int:
    calls = 0
    backends = [b for b in ("native", "triton") if BACKENDS.get(b).serves(device.type)]
    if device.type == "cpu":
        backends = ["native"]
    for backend in backends:
        cprl_fast.set_backend(backend)
        for spec in SPECS.values():
            for variant in spec.variants:
                for layout in ("contiguous", "channels_last"):
                    for shape in SHAPES:
                        args = list(spec.sample(shape, device=device, layout=layout, seed=calls,
                                                **variant))  # fmt: skip
                        for i in spec.grad_args:
                            args[i] = args[i].detach().requires_grad_(True)
                        outs = spec.call(spec.public, tuple(args))
                        want = spec.call(spec.reference, tuple(args))
                        torch.testing.assert_close(
                            outs, want, **spec.tolerance(torch.float32, variant)
                        )
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
