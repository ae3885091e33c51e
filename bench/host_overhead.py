"""Host time of one activation call inside a model: ``CPRLActivation`` against ``nn.ReLU``.

    python -m bench.host_overhead                 # [2, 8, 4, 4] float32 on the CPU, 1 thread
    python -m bench.host_overhead --json out.json

On tensors this small the kernels take well under a microsecond, so what is timed is host work
alone: the Python module call, the dispatcher, autograd's graph and the allocations. Each side
runs forward + backward (with a dense upstream gradient, as inside a network) ``calls`` times
per round; the sides alternate over ``rounds`` rounds (:func:`bench.timing.interleaved`), and
the ratio is the median of the per-round ratios. Also timed, to show where the time goes: the
bare op the layer calls, ``cprl_fast._C.ca_activation`` (``ca_c``: the op through a typed
dispatcher handle), the same op through torch.ops (``ca_op``: the boxed call path), the
two-output ``torch.ops.cprl_fast.rank_mask`` (``op``, whose second output, the mask, the
layer does not need) and a two-input builtin (``x * b``, the same autograd graph shape as the
op: two leaves).
"""

from __future__ import annotations

import argparse
import json
import platform

import torch
from torch import nn

from bench.timing import interleaved, ratio
from cprl_fast import _C
from cprl_fast.nn import CPRLActivation


def measure(shape=(2, 8, 4, 4), calls: int = 500, rounds: int = 21) -> dict:
    """Microseconds per forward + backward call of each side (median over rounds, with the
    per-round spread), and each side's per-round ratio to ``nn.ReLU``."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(*shape, generator=g).requires_grad_()
    grad = torch.randn(*shape, generator=g)
    b = torch.tensor(0.4, requires_grad=True)
    relu, ca = nn.ReLU(), CPRLActivation(shape[1])
    op = torch.ops.cprl_fast.rank_mask.default
    ca_op = torch.ops.cprl_fast.ca_activation.default
    ca_c = _C.ca_activation
    one_call = {
        "relu": lambda: relu(x).backward(grad),
        "ca": lambda: ca(x).backward(grad),
        "ca_c": lambda: ca_c(x, b, 1.0, False, 0.1).backward(grad),
        "ca_op": lambda: ca_op(x, b, 1.0, False, 0.1).backward(grad),
        "op": lambda: op(x, b, 1.0, False, 0.1)[0].backward(grad),
        "mul": lambda: (x * b).backward(grad),
    }

    def repeated(fn):
        def run():
            for _ in range(calls):
                fn()

        return run

    timed = interleaved({k: repeated(f) for k, f in one_call.items()}, torch.device("cpu"),
                        rounds=rounds)  # fmt: skip
    return {
        "shape": list(shape),
        "calls_per_round": calls,
        "rounds": rounds,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "machine": platform.processor() or platform.machine(),
        "us_per_call": {k: v["median_s"] / calls * 1e6 for k, v in timed.items()},
        "ratio_to_relu": {k: ratio(timed, k, "relu") for k in one_call if k != "relu"},
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=21)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", help="also write the result here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    result = measure(calls=args.calls, rounds=args.rounds)
    for name, us in result["us_per_call"].items():
        r = result["ratio_to_relu"].get(name)
        extra = f"  {r['median']:.2f}x ReLU [{r['min']:.2f}, {r['max']:.2f}]" if r else ""
        print(f"{name:6s} {us:7.1f} us per forward + backward{extra}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=1)


if __name__ == "__main__":
    main()
