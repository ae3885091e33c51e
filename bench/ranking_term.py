"""What the ranking hinge of ``rank_weight`` costs a training iteration, with its batches drawn
on the training thread or ahead by a worker process (:class:`cprl_fast.train.ranking.RankingTerm`).

    python -m bench.ranking_term                 # CPU, torch on one thread
    python -m bench.ranking_term --device cuda --out bench/results/<card>/rank.json

Three sides, alternating per round (:func:`bench.timing.interleaved`), each ``--steps``
iterations of a ResNet-18 regression step (AdamW, ``--batch`` crops of ``--crop`` px) plus the
hinge on a ranking batch (8 crops x 5 versions of the same size):

- ``in_process``: the batch drawn on the training thread when its step asks (``num_workers`` 0);
- ``worker``: drawn ahead by one worker process (``num_workers`` 1);
- ``drawn``: one batch drawn before timing and reused: the floor a worker can reach, the
  iteration's own compute.

Prints (and with ``--out`` writes) seconds per iteration of each, ``worker``'s and ``drawn``'s
ratio to ``in_process``, and the time to draw one batch on its own.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from bench.timing import interleaved, ratio
from cprl_fast.io import write_json_atomic
from cprl_fast.models import resnet_iqa
from cprl_fast.train.ranking import RankingConfig, RankingTerm


def references(n: int = 4, side: int = 256) -> list[Image.Image]:
    """``n`` smooth random RGB photographs of ``side`` px (stand-ins for pristine scenes)."""
    rng = np.random.default_rng(0)
    out = []
    for _ in range(n):
        small = rng.integers(0, 256, (side // 8, side // 8, 3), dtype=np.uint8)
        out.append(Image.fromarray(small).resize((side, side), Image.BICUBIC))
    return out


def measure(device: str = "cpu", steps: int = 10, rounds: int = 7, batch: int = 32,
            crop: int = 64) -> dict:  # fmt: skip
    """Seconds per iteration of the three sides (see the module docstring)."""
    dev = torch.device(device)
    cfg = RankingConfig(crop=crop)
    refs = references()
    model = resnet_iqa("resnet18", input_norm="lcn").to(dev).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.rand(batch, 3, crop, crop, device=dev)
    y = torch.rand(batch, device=dev)
    drawn = RankingTerm(refs, cfg, 0).batch(0, dev)

    class Drawn(RankingTerm):
        def batch(self, t: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
            return drawn

    terms = {"in_process": RankingTerm(refs, cfg, 0), "worker": RankingTerm(refs, cfg, 1),
             "drawn": Drawn(refs, cfg, 0)}  # fmt: skip
    position = dict.fromkeys(terms, 0)  # each side's next step

    def run(name: str) -> None:
        term = terms[name]
        for _ in range(steps):
            loss = F.mse_loss(model(x).float(), y) + term(model, position[name], dev)
            position[name] += 1
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    timed = interleaved({name: (lambda name=name: run(name)) for name in terms}, dev,
                        rounds=rounds, warmup=1)  # fmt: skip
    start = time.perf_counter()
    for t in range(steps):
        terms["in_process"].batches[1000 + t]
    draw = (time.perf_counter() - start) / steps
    per_step = {name: timed[name]["median_s"] / steps for name in timed}
    return {
        "device": str(dev), "torch_threads": torch.get_num_threads(), "steps_per_call": steps,
        "rounds": rounds, "batch": batch, "crop": crop, "ranking_crops": cfg.crops,
        "seconds_per_iteration": per_step, "draw_one_batch_s": draw,
        "worker_over_in_process": ratio(timed, "worker", "in_process"),
        "drawn_over_in_process": ratio(timed, "drawn", "in_process"),
        "timing": "wall time, sides alternating per round (bench.timing.interleaved), the "
                  "median over rounds of one call of --steps iterations",
    }  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--steps", type=int, default=10, help="iterations per timed call")
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--threads", type=int, default=1, help="torch threads (CPU)")
    p.add_argument("--out", help="write the result here as JSON")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    result = measure(args.device, args.steps, args.rounds)
    print(json.dumps(result, indent=1))
    if args.out:
        write_json_atomic(args.out, result)


if __name__ == "__main__":
    main()
