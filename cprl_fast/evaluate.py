"""Clean and attacked evaluation of quality models, as in the paper's Tables 1, 2 and 4.

:func:`evaluate` runs a model over a dataset, clean and under each attack at budget ``eps``
(the attack targets are the labels, loss ``(h(x') - y)^2``; score reflection uses ``sign(y -
0.5)``), and returns per condition SRCC, PLCC, KRCC, MSE, RMSE, the mean score change ``|s' - s|``
and the robustness score ``R`` (docs/maths.md §6). :func:`cprl_fast.render.write_results` writes
it as JSON, CSV and a markdown table.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Sequence
from fractions import Fraction

import numpy as np
import torch
from torch import nn

from cprl_fast import attacks, metrics
from cprl_fast.attacks.common import eval_mode
from cprl_fast.checks import check_image_eps, check_rankable
from cprl_fast.data.decoded import decoded_once, underlying
from cprl_fast.devices import pins
from cprl_fast.reports import eps_label


def parse_number(text: str | float, name: str = "eps") -> float:
    """``"1/255"``, ``"0.004"`` or a number -> float (no range check); ValueError naming
    ``name`` for anything else."""
    if isinstance(text, (int, float)):
        return float(text)
    try:
        return float(Fraction(text.strip()))
    except (ValueError, ZeroDivisionError):
        raise ValueError(
            f"{name} must be a number or a fraction like 1/255, got {text!r}"
        ) from None


def parse_eps(text: str | float) -> float:
    """``"1/255"``, ``"0.004"`` or a number -> float, checked (finite, in [0, 1]) before any work
    is done with it."""
    eps = parse_number(text)
    check_image_eps(eps)
    return eps


def _condition(clean: np.ndarray, pred: np.ndarray, y: np.ndarray, seed: int = 0) -> dict:
    """The metrics of one condition, 95% bootstrap intervals of SRCC and PLCC over the images
    (``srcc_ci``, ``plcc_ci``), and the scores themselves (``scores``, for paired comparisons)."""
    out = metrics.scores_with_intervals(pred, y, seed)
    out["score_change"] = float(metrics.score_change(clean, pred).mean())
    # R of unmoved scores is only its 1e-6 floor (5.85 for any model): no number
    out["robustness"] = None if pred is clean else metrics.robustness(clean, pred)
    out["scores"] = [float(v) for v in pred]
    return out


def worst_case(clean: np.ndarray, attacked: dict[str, np.ndarray], y: np.ndarray) -> tuple:
    """The worst case over an attack suite, AutoAttack-style: the lowest SRCC among the attacks
    and among per-image combinations. Every image's attacked versions are valid inputs inside
    its ball, and so is the clean image (an attack may move a score the way that helps the
    order: then leaving that image alone hurts more), so an adversary may pick, per image, the
    one that hurts the order most: the lowest score for an image whose label is above the
    median label, the highest below it, among the attacked versions alone and among them and
    the clean one (of the two combinations the lower SRCC: the rule is a heuristic, and taking
    both never reports a milder worst case than either). An undefined SRCC (an attack that gives
    every image the same score) is never the worst unless all are (:func:`metrics.lowest`).
    Returns (name of the worst: an attack or ``"per image"``, its scores)."""
    above = y > np.median(y)
    combined = []
    for stack in (np.stack(list(attacked.values())), np.stack([clean, *attacked.values()])):
        combined.append(np.where(above, stack.min(axis=0), stack.max(axis=0)))
    per_image = combined[metrics.lowest({k: metrics.srcc(p, y) for k, p in enumerate(combined)})]
    candidates = {**attacked, "per image": per_image}
    worst = metrics.lowest({name: metrics.srcc(p, y) for name, p in candidates.items()})
    return worst, candidates[worst]


#: What :func:`predictions` may remember within one run: by its arguments' key
#: (:func:`_memo_key`), the objects the key names by identity and the scores and labels.
PredictionMemo = dict[tuple, tuple[tuple, np.ndarray, np.ndarray]]

#: Told of each batch a prediction pass has scored: ``(attack, eps, images)``, the attack
#: None for the clean pass; its count is the batch's size on the host (no device value is read).
Progress = Callable[[str | None, float, int], None]


#: A prediction pass: the attack (None for the clean pass) and its budget eps.
Pass = tuple[str | None, float]


def evaluate_passes(attack_names: Sequence[str], eps: float) -> list[Pass]:
    """The passes :func:`evaluate` asks :func:`predictions` for: the clean one, then each
    attack at ``eps``."""
    return [(None, eps), *((name, eps) for name in attack_names)]


def _memo_key(model: nn.Module, dataset, attack: str | None, eps: float, batch_size: int,
              device, seed: int, source: nn.Module | None) -> tuple:  # fmt: skip
    """:func:`predictions`' memo key: an attack at eps 0 is the clean pass."""
    attacked = attack is not None and eps > 0
    return (id(model), id(underlying(dataset)), attack if attacked else None,
            eps if attacked else 0.0, batch_size, str(device), seed,
            id(source) if attacked else None)  # fmt: skip


def _memo_objects(key: tuple, model: nn.Module, dataset, source: nn.Module | None) -> tuple:
    """The objects memo ``key`` names by identity: the model, the dataset (the one a
    :class:`~cprl_fast.data.DecodedOnce` reads) and the source where the pass uses one."""
    return model, underlying(dataset), (source if key[-1] is not None else None)


def _identities(*objects: object) -> tuple:
    """Weak references to ``objects`` (the object itself where it takes none, None for None):
    what :func:`_memo_holds` compares, so that an object made after another was freed, which
    CPython often gives the same ``id`` (a model of reproduce's b sweep after the last),
    never reads the freed one's scores."""

    def ref(obj):
        if obj is None:
            return None
        try:
            return weakref.ref(obj)
        except TypeError:
            return lambda: obj  # kept alive by the memo: its id cannot be reused meanwhile

    return tuple(ref(o) for o in objects)


def _memo_holds(memo: PredictionMemo, key: tuple, *objects: object) -> bool:
    """Whether ``memo`` holds the scores of ``key`` for these very ``objects`` (model,
    dataset, source), not for others that had their ids."""
    if key not in memo:
        return False
    return all((r is None and o is None) or (r is not None and r() is o)
               for r, o in zip(memo[key][0], objects, strict=True))  # fmt: skip


def passes_to_score(model: nn.Module, dataset, passes: Sequence[Pass], batch_size: int = 16,
                    device="cpu", seed: int = 0, source: nn.Module | None = None,
                    memo: PredictionMemo | None = None) -> int:  # fmt: skip
    """How many of ``passes`` are still to score when :func:`predictions` runs them with a
    memo that holds ``memo``'s results (None: nothing yet): a memo scores each distinct pass
    once, and an attack at eps 0 is the clean pass. A progress bar's total is this times the
    images."""
    keys = {_memo_key(model, dataset, a, e, batch_size, device, seed, source) for a, e in passes}
    return sum(1 for k in keys
               if not _memo_holds(memo or {}, k, *_memo_objects(k, model, dataset, source)))


def bar_progress(bar, what: str) -> Progress:
    """A :data:`Progress` that adds each batch's images to ``bar`` (a tqdm bar) and names the
    pass it is in: ``<what>: clean``, ``<what>: pgd at eps=1/255``, ``<what>: reflect10
    unbounded`` (eps 1)."""

    def progress(attack: str | None, eps: float, count: int) -> None:
        budget = "unbounded" if eps >= 1 else f"at eps={eps_label(eps)}"
        bar.set_description(f"{what}: {attack} {budget}" if attack else f"{what}: clean",
                            refresh=False)  # fmt: skip
        bar.update(count)

    return progress


def predictions(model: nn.Module, dataset, attack: str | None, eps: float, batch_size: int = 16,
                device="cpu", seed: int = 0, source: nn.Module | None = None,
                memo: PredictionMemo | None = None,
                progress: Progress | None = None) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Scores of ``model`` on ``dataset`` (attacked by ``attack`` at ``eps`` when given;
    ``source``: the model a transfer attack crafts on) and the labels, in dataset order.
    ``progress``: told of each batch scored (none when the memo holds the result).

    ``memo``: a dictionary that one run keeps (``cprl_fast.reproduce``) so that the same
    predictions are computed once: the clean scores (any attack at eps 0 is the clean
    condition), and an attack at one eps that both a table and a figure ask for. Keyed by the
    identity of the model, dataset and source objects (a model freed and another made at its
    address is another key: the memo holds weak references), so the caller must not change a
    model's weights or a dataset while it keeps the memo; the results are deterministic in the
    other arguments (a dataset and :func:`cprl_fast.data.decoded_once` of it are one key: the same
    images). Each call gets its own copies."""
    if attack is not None:
        check_attacks([attack], source)
    check_image_eps(eps)
    if memo is not None:
        key = _memo_key(model, dataset, attack, eps, batch_size, device, seed, source)
        objects = _memo_objects(key, model, dataset, source)
        if not _memo_holds(memo, key, *objects):
            memo[key] = (_identities(*objects),
                         *predictions(model, dataset, attack, eps, batch_size, device, seed,
                                      source, progress=progress))  # fmt: skip
        _, pred, labels = memo[key]
        return pred.copy(), labels.copy()
    g = torch.Generator().manual_seed(seed)
    preds, labels = [], []
    # on a GPU the host reads no score until the end, so it loads the next batch (pinned, copied
    # without waiting) while the GPU attacks and scores this one
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, pin_memory=pins(device))
    attacked = attack is not None and eps > 0
    with eval_mode(model):
        for x, y in loader:
            labels.append(y)
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            if attacked:
                x = attacks.run_attack(attack, model, x, y, eps, g, source)
            with torch.no_grad():
                preds.append(model(x).float())
            if progress is not None:
                progress(attack if attacked else None, eps, len(labels[-1]))
    return torch.cat(preds).cpu().numpy(), torch.cat(labels).numpy()


def check_attacks(names: Sequence[str], source: nn.Module | None) -> list[str]:
    """``names`` as a list of known attacks, each once, with the source model that any of them
    needs (``transfer`` crafts its images on it); else a ValueError naming the attack."""
    names = attacks.check_attack_names(names)
    missing = attacks.needs_source(names) if source is None else []
    if missing:
        raise ValueError(f"attack {missing[0]!r} needs a source model to craft its images on "
                         "(source=... in Python; cprl-fast audit --transfer-from CKPT; a study "
                         "uses another of its models)")  # fmt: skip
    return names


def evaluate(model: nn.Module, dataset, attack_names: Sequence[str] = attacks.SUITES["protocol"],
             eps: float = 1 / 255, batch_size: int = 16, device="cpu", seed: int = 0,
             source: nn.Module | None = None,
             memo: PredictionMemo | None = None,
             progress: Progress | None = None) -> dict[str, dict[str, float]]:  # fmt: skip
    """``{"clean": metrics, "<attack>": metrics, ...}`` of ``model`` on ``dataset`` (``source``:
    the model the ``transfer`` attack crafts its images on; ``memo``, ``progress``: see
    :func:`predictions`; with ``progress`` no bar of its own; without ``memo``, one of its own,
    so that an attack at eps 0 reuses the clean pass). Each image is decoded once for all the
    conditions (:func:`cprl_fast.data.decoded_once`). The passes it scores:
    :func:`passes_to_score` of :func:`evaluate_passes`."""
    from tqdm import tqdm

    attack_names = check_attacks(attack_names, source)
    check_image_eps(eps)
    check_rankable(len(dataset), "evaluate")
    dataset = decoded_once(dataset)
    memo = {} if memo is None else memo
    clean, y = predictions(model, dataset, None, eps, batch_size, device, seed, memo=memo,
                           progress=progress)  # fmt: skip
    results = {"clean": {**_condition(clean, clean, y, seed), "labels": [float(v) for v in y]}}
    attacked = {}
    # an inner bar (an audit runs it per budget): off when stderr is no terminal, no escapes
    for name in tqdm(list(attack_names), desc=f"attacks at eps={eps:.4g}", unit="attack",
                     leave=False, disable=True if progress is not None else None):  # fmt: skip
        attacked[name], _ = predictions(model, dataset, name, eps, batch_size, device, seed,
                                        source, memo, progress)  # fmt: skip
        results[name] = _condition(clean, attacked[name], y, seed)
    if len(attacked) > 1:
        which, pred = worst_case(clean, attacked, y)
        results["worst"] = {**_condition(clean, pred, y, seed), "from": which}
    return results


def compare(results: dict, a: str, b: str) -> dict[str, dict]:
    """Per condition both models have, ``SRCC(a) - SRCC(b)`` on the same images with a paired
    bootstrap 95% interval and whether it excludes 0 (:func:`metrics.paired_difference`)."""
    labels = results[a]["clean"]["labels"]
    out = {}
    for cond in results[a]:
        if cond in results[b]:
            out[cond] = metrics.paired_difference(results[a][cond]["scores"],
                                                  results[b][cond]["scores"], labels)  # fmt: skip
    return out


COLUMNS = (*metrics.SCORES, "score_change", "robustness")


Results = dict[str, dict[str, dict]]  # model -> condition -> metric -> value
