"""A robustness audit of any quality model: a fixed attack suite at several budgets, the worst
case per budget with its interval, and automatic checks for gradient masking.

    >>> report = audit(model, dataset, eps=(1/255, 4/255), out_dir="audit")  # doctest: +SKIP

``model`` is any ``nn.Module`` mapping images ``[N, 3, H, W]`` in [0, 1] to scores ``[N]`` in
[0, 1], higher is better (a checkpoint of this project, or a user's module): the attacks'
objectives measure scores on the labels' scale (the squared error to labels in [0, 1], Eq. 5's
reflection across 0.5), so a model of another scale is refused before any attack (the same
model times 100 looked ten times as robust to FGSM) and one that ranks in reverse fails a
check. The diagnostics follow Carlini et al.'s
checklist ("On Evaluating Adversarial Robustness", 2019) and AutoAttack's practice (Croce and
Hein 2020); each is a test that can fail, and a failed one means the white-box numbers are
not to be trusted as they stand:

- ``gradient_free_not_stronger``: Square (no gradients) must not lower SRCC significantly more
  than the strongest white-box attack (paired bootstrap over the images);
- ``transfer_not_stronger`` (with a source model): images crafted on another model must not
  lower SRCC significantly more than the strongest white-box attack on the model itself;
- ``more_steps_not_weaker``: 10-step PGD must reach at least the squared error of 1-step FGSM
  on its own objective;
- ``more_restarts_not_weaker`` (with ``rank3`` in the suite): three restarts of the rank-order
  attack must not leave SRCC more than 0.05 above one run of it;
- ``damage_grows_with_eps``: the worst-case SRCC must not rise by more than 0.05 as eps grows;
- ``unbounded_reaches_chance``: with an unbounded budget (eps = 1) the iterative score
  reflection (no random start, so no credit for noise) must bring SRCC to 0.2 or below;
- ``clean_ranking_not_reversed``: the clean SRCC's 95% interval must not lie below 0 (a model
  whose higher score means worse quality, or one that learned the reverse: the attacks push
  its scores the wrong way, and "worst case" is not the worst for it);
- ``metrics_finite``: every SRCC must be defined (a model that gives images the same score
  makes SRCC NaN; such a report never says "all passed");
- ``surrogate_not_stronger`` (models with CA modules): PGD through the soft-rank surrogate
  must not lower SRCC significantly more than PGD through the model itself.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from cprl_fast import metrics
from cprl_fast.attacks import SUITES, black_box_checks, white_box
from cprl_fast.checks import check_count, check_images, check_rankable
from cprl_fast.data.decoded import decoded_once
from cprl_fast.evaluate import (
    PredictionMemo,
    bar_progress,
    check_attacks,
    evaluate,
    evaluate_passes,
    passes_to_score,
    predictions,
)
from cprl_fast.nn import CPRLActivation
from cprl_fast.render import write_audit
from cprl_fast.reports import AuditReport, Check, eps_label, worst_of

#: The budgets (L-infinity, pixel units) and the suite an audit runs by default.
DEFAULT_EPS = (1 / 255, 2 / 255, 4 / 255, 8 / 255)
SUITE = SUITES["audit"]
WHITE_BOX = white_box()
#: The black-box attacks, each with the check that it is not stronger than the white box.
BLACK_BOX = black_box_checks()
#: The attacks of the unbounded check: iterative, deterministic from the clean image.
UNBOUNDED = SUITES["unbounded"]
#: How far the worst-case SRCC may rise with eps before "damage grows with eps" fails (and
#: three restarts may stay above one before "more restarts not weaker" fails).
NON_MONOTONE_TOLERANCE = 0.05
#: The SRCC an unbounded white-box attack must reach.
CHANCE_SRCC = 0.2


def _has_ca(model: nn.Module) -> bool:
    return any(isinstance(m, CPRLActivation) for m in model.modules())


def _check(name: str, eps: float | None, passed: bool, detail: str) -> Check:
    return Check(name, eps, bool(passed), detail)


def _not_stronger(res: dict, a: str, b: str, labels) -> tuple[bool, str]:
    """Whether attack ``a`` does not lower SRCC significantly more than ``b`` (paired)."""
    d = metrics.paired_difference(res[a]["scores"], res[b]["scores"], labels)
    lo, hi = d["ci"]
    detail = (f"SRCC {a} {res[a]['srcc']:.3f}, {b} {res[b]['srcc']:.3f} (difference "
              f"{d['difference']:+.3f} [{lo:+.3f}, {hi:+.3f}])")  # fmt: skip
    return not (d["significant"] and d["difference"] < 0), detail


def diagnose(by_eps: dict[float, dict], unbounded: dict, soft: bool) -> list[Check]:
    """The gradient-masking checks on an audit's results (see the module's docstring)."""
    checks = []
    clean = next(iter(by_eps.values()))["clean"]
    labels = clean["labels"]
    lo, hi = clean["srcc_ci"]
    checks.append(_check("clean_ranking_not_reversed", None, not hi < 0,
                         f"clean SRCC {clean['srcc']:.3f} [{lo:.3f}, {hi:.3f}]"
                         + (": the model ranks the images in reverse; if a higher score means "
                            "worse quality, audit 1 - score" if hi < 0 else "")))  # fmt: skip
    for eps, res in by_eps.items():
        tag = f"eps={eps_label(eps)}: "
        white = [n for n in WHITE_BOX if n in res]
        for black, check in BLACK_BOX.items():
            if black in res and white:
                strongest = metrics.lowest({n: res[n]["srcc"] for n in white})
                passed, detail = _not_stronger(res, black, strongest, labels)
                checks.append(_check(check, eps, passed, tag + detail))
        if "pgd" in res and "fgsm" in res:
            pgd, fgsm = res["pgd"]["mse"], res["fgsm"]["mse"]
            checks.append(_check("more_steps_not_weaker", eps, pgd >= fgsm * (1 - 1e-3),
                                 f"{tag}MSE pgd {pgd:.5f}, fgsm {fgsm:.5f}"))  # fmt: skip
        if "rank3" in res and "rank" in res:
            one, three = res["rank"]["srcc"], res["rank3"]["srcc"]
            checks.append(_check("more_restarts_not_weaker", eps,
                                 three <= one + NON_MONOTONE_TOLERANCE,
                                 f"{tag}SRCC rank {one:.3f}, rank3 {three:.3f}"))  # fmt: skip
        if soft and "pgd-soft" in res and "pgd" in res:
            passed, detail = _not_stronger(res, "pgd-soft", "pgd", labels)
            checks.append(_check("surrogate_not_stronger", eps, passed, tag + detail))
    bad = sorted({f"{name} at eps={eps_label(eps)}" for eps, res in by_eps.items()
                  for name, r in res.items() if not np.isfinite(r["srcc"])})  # fmt: skip
    checks.append(_check("metrics_finite", None, not bad,
                         "every SRCC is finite" if not bad else
                         f"SRCC is undefined (NaN) for {', '.join(bad[:4])}: the model gives "
                         "some images the same score"))  # fmt: skip
    worst = [(eps, worst_of(res)["srcc"]) for eps, res in sorted(by_eps.items())]
    rises = [a for a, b in itertools.pairwise(worst) if b[1] > a[1] + NON_MONOTONE_TOLERANCE]
    curve = ", ".join(f"{eps_label(e)}: {v:.3f}" for e, v in worst)
    checks.append(_check("damage_grows_with_eps", None, not rises,
                         f"worst-case SRCC by eps: {curve}"))  # fmt: skip
    reached = unbounded[metrics.lowest({n: r["srcc"] for n, r in unbounded.items()})]["srcc"]
    checks.append(_check("unbounded_reaches_chance", 1.0, reached <= CHANCE_SRCC,
                         f"eps=1 (unbounded): SRCC under {', '.join(unbounded)} {reached:.3f} "
                         f"(must be <= {CHANCE_SRCC})"))  # fmt: skip
    return checks


def check_auditable(model: nn.Module, dataset, batch_size: int = 16, device="cpu") -> None:
    """Refuses, in one line and before any attack, what an audit cannot measure: images that
    are not finite values in [0, 1] (every image is checked), and a model whose output on the
    first batch is not a float tensor of shape ``[N]`` (or ``[N, 1]``), is not finite, is
    outside [0, 1] (the labels' scale, which the attacks' objectives assume), is the same for
    every image (SRCC undefined) or has no gradient with respect to the images (an
    output that does not depend on them through autograd; a zero gradient is allowed: that is
    gradient masking, which the diagnostics are there to catch)."""
    import torch

    check_count(batch_size, "batch_size")
    check_rankable(len(dataset), "an audit")
    first = None
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size)
    for k, (x, _) in enumerate(loader):
        check_images(x, f"images of batch {k}")
        if first is None:
            first = x
    if len(first) < 2:
        first = torch.stack([dataset[i][0] for i in range(2)])
    x = first.to(device).requires_grad_(True)
    was = model.training
    model.eval()
    try:
        out = model(x)
    finally:
        model.train(was)
    n = len(x)
    if not isinstance(out, torch.Tensor):
        raise TypeError(f"the model must return a tensor of scores [N], got {type(out).__name__}")
    if not out.is_floating_point():
        raise TypeError(f"the model must return float scores [N], got {out.dtype}")
    if tuple(out.shape) not in ((n,), (n, 1)):
        raise ValueError(f"the model must return scores of shape [N] = [{n}] for images "
                         f"{list(x.shape)}, got {list(out.shape)}")  # fmt: skip
    if not bool(torch.isfinite(out).all()):
        raise ValueError("the model returns NaN or infinite scores: an audit cannot rank them")
    values = out.detach().flatten()
    outside = ((values < 0) | (values > 1)).nonzero().flatten().tolist()
    if outside:
        k = outside[0]
        raise ValueError(f"the model's scores must be in [0, 1], higher is better (the attacks' "
                         f"objectives use the labels' scale), got {float(values[k]):g} "
                         f"for image {k} of the first batch: map them into [0, 1] (a 0-100 "
                         "MOS divided by 100, 1 - score for a lower-is-better one)")  # fmt: skip
    if bool((out == out.flatten()[0]).all()):
        same = float(out.detach().flatten()[0])
        raise ValueError(f"the model returns the same score ({same:g}) for every image of the "
                         "first batch: SRCC is undefined")  # fmt: skip
    if not out.requires_grad:
        raise ValueError("the model's scores have no gradient with respect to the images "
                         "(computed under no_grad or detached): white-box attacks need one")
    (grad,) = torch.autograd.grad(out.float().sum(), x, allow_unused=True)
    if grad is None:
        raise ValueError("the model's scores do not depend on the images through autograd: "
                         "white-box attacks need a gradient")  # fmt: skip
    if not bool(torch.isfinite(grad).all()):
        raise ValueError("the model's gradient with respect to the images is NaN or infinite")


def check_budgets(eps: Sequence[float]) -> list[float]:
    """The budgets of an audit as a list: at least one, each once (the results are keyed by
    budget: two of one value would make one row); else a ValueError naming them."""
    eps = list(eps)
    if not eps:
        raise ValueError("eps must hold at least one budget, e.g. (1/255, 4/255)")
    if len({float(e) for e in eps}) != len(eps):
        raise ValueError(f"eps must each be given once, got {[eps_label(e) for e in eps]}")
    return eps


def audit_attacks(model: nn.Module, attacks: Sequence[str] = SUITE,
                  source: nn.Module | None = None) -> list[str]:
    """The attacks :func:`audit` runs at every eps: ``attacks``, then ``transfer`` when a
    ``source`` model is given and ``pgd-soft`` for a model with CA modules (each once); an
    attack that needs a ``source`` without one is named."""
    attacks = check_attacks(attacks, source)
    if not attacks:
        raise ValueError("attacks must name at least one attack of the suite")
    if source is not None and "transfer" not in attacks:
        attacks.append("transfer")
    if _has_ca(model) and "pgd-soft" not in attacks:
        attacks.append("pgd-soft")
    return attacks


def audit(model: nn.Module, dataset, eps: Sequence[float] = DEFAULT_EPS,
          attacks: Sequence[str] = SUITE, batch_size: int = 16, device="cpu", seed: int = 0,
          out_dir: str | Path | None = None, title: str = "model",
          source: nn.Module | None = None, certify_sigmas: Sequence[float] = (),
          certify_n: int = 1000, certify_alpha: float = 0.001,
          certify_layer: str | None = None, certify_feature_sigmas: Sequence[float] = (),
          certify_lipschitz: str = "power") -> AuditReport:  # fmt: skip
    """Runs ``attacks`` at every ``eps`` on ``dataset`` (SRCC/PLCC with 95% bootstrap intervals,
    the worst case per eps) and the gradient-masking diagnostics; with ``out_dir`` writes
    report.md, report.json and srcc_vs_eps.png there. ``source``: another trained model; the
    ``transfer`` attack (images crafted on it) joins the suite. ``certify_sigmas``: median
    smoothing at each noise level (:mod:`cprl_fast.certify`, ``certify_n`` draws, joint
    confidence ``1 - certify_alpha``), certified at L2 radius 0 and at the radius of the L2
    ball that holds each L-infinity ball, ``eps * sqrt(3 H W)``. ``certify_layer``,
    ``certify_feature_sigmas``, ``certify_lipschitz``: feature-space smoothing at that layer
    (:func:`cprl_fast.certify.certify_features`, sigma in feature units) on the same images,
    beside the input-space rows with the time each took. Each image is decoded once for the
    whole audit (:func:`cprl_fast.data.decoded_once`) and scored clean once. Returns the
    report."""
    from tqdm import tqdm

    eps = check_budgets(eps)
    if certify_sigmas or certify_feature_sigmas:  # checked before any attack runs
        from cprl_fast.certify import check_settings

        for sigma in certify_sigmas:
            check_settings(sigma, certify_n, certify_alpha, (0.0,), batch_size)
        for sigma in certify_feature_sigmas:
            check_settings(sigma, certify_n, certify_alpha, (0.0,), batch_size, pixel_units=False)
    if certify_feature_sigmas:
        from cprl_fast.certify import split_features

        if certify_layer is None:
            raise ValueError("feature-space smoothing needs the layer to add noise at")
        split_features(model, certify_layer)
    attacks = audit_attacks(model, attacks, source)
    images = decoded_once(dataset)  # the check below reads every image first
    check_auditable(model, images, batch_size, device)
    soft = _has_ca(model)
    by_eps = {}
    memo: PredictionMemo = {}  # the clean scores, shared by every eps
    # one bar over every image of every pass: the clean one, the attacked ones, the unbounded
    # check's
    planned = [p for e in eps for p in evaluate_passes(attacks, e)]
    passes = passes_to_score(model, images, planned, batch_size, device, seed, source, memo)
    passes += len(UNBOUNDED)
    with tqdm(total=passes * len(images), desc="audit", unit="img") as bar:
        progress = bar_progress(bar, "audit")
        for e in eps:
            by_eps[float(e)] = evaluate(model, images, attacks, e, batch_size, device, seed,
                                        source, memo, progress)  # fmt: skip
        # without a random start: at eps = 1 a random start alone would reach chance
        unbounded = {}
        for n in UNBOUNDED:
            pred, y = predictions(model, images, n, 1.0, batch_size, device, seed,
                                  progress=progress)  # fmt: skip
            unbounded[n] = {"srcc": metrics.srcc(pred, y)}
    report = AuditReport(model=title, images=len(dataset), attacks=attacks,
                         eps=[float(e) for e in eps], results=by_eps, unbounded=unbounded,
                         diagnostics=diagnose(by_eps, unbounded, soft))  # fmt: skip
    if certify_sigmas or certify_feature_sigmas:
        report.certified = certified_rows(model, images, eps, certify_sigmas, certify_n,
                                          certify_alpha, batch_size, device, seed, certify_layer,
                                          certify_feature_sigmas, certify_lipschitz)  # fmt: skip
    if out_dir is not None:
        write_audit(report, Path(out_dir))
    return report


def summary(report: AuditReport, dataset=None) -> dict:
    """The audit in a few numbers, for a model card: clean SRCC, the worst case per eps with its
    interval and the attack it came from, the failed checks, and the certified table if any."""
    info = getattr(dataset, "split_info", {}) or {}
    worst = {e: report.worst(e) for e in sorted(report.results)}
    out = {"date": time.strftime("%Y-%m-%d"), "images": report.images,
           "dataset": getattr(dataset, "name", None), "split": info.get("split"),
           "attacks": report.attacks, "clean_srcc": report.clean["srcc"],
           "worst": {eps_label(e): {"srcc": w["srcc"], "ci": w.get("srcc_ci"),
                                    "from": w.get("from")} for e, w in worst.items()},
           "failed_checks": sorted(set(report.failed))}  # fmt: skip
    if report.certified:
        out["certified"] = [{"sigma": c["sigma"], "smoothed_srcc": c["srcc"],
                             "radii": [{k: r[k] for k in ("radius", "width", "certified_srcc")}
                                       for r in c["radii"]]}
                            for c in report.certified]  # fmt: skip
    return out


def record(checkpoint: str | Path, report: AuditReport, dataset=None,
           audited: nn.Module | None = None) -> None:  # fmt: skip
    """Writes :func:`summary` into the checkpoint's model card (key ``audit``), atomically and
    in its own format (``torch.save`` or safetensors). ``audited``: the model the report is of;
    where given, a checkpoint whose weights are no longer that model's (a training still
    running in its folder replaced it during the audit) is refused, so a card never carries the
    audit of other weights."""
    from cprl_fast.train.checkpoint import load, save_atomic, save_safetensors

    path = Path(checkpoint)
    state = load(path)
    if audited is not None:
        ours = audited.state_dict()
        theirs = state["model"]
        if ours.keys() != theirs.keys() or not all(
            torch.equal(ours[k].detach().cpu(), theirs[k]) for k in ours
        ):
            raise ValueError(f"checkpoint {path} changed while it was audited (its weights are "
                             "not those audited): the audit was not recorded in it")  # fmt: skip
    state["audit"] = summary(report, dataset)
    if path.suffix == ".safetensors":
        save_safetensors(state, path)
    else:
        save_atomic(state, path)


def certified_rows(model, dataset, eps, sigmas, n, alpha, batch_size, device, seed,
                   layer=None, feature_sigmas=(), lipschitz="power") -> list[dict]:  # fmt: skip
    """The certified-interval rows of an audit report: for each input sigma (and feature sigma
    at ``layer``), the smoothed model's clean metrics and, per budget ``eps``, the share of
    images whose interval is certified (cprl_fast.certify)."""
    from cprl_fast.certify import certify, certify_features, smoothed_metrics

    side = dataset[0][0].numel() ** 0.5
    radii = [0.0] + [float(e) * side for e in eps]
    runs = [("input", float(s)) for s in sigmas] + [("feature", float(s)) for s in feature_sigmas]
    out = []
    for space, sigma in runs:
        if space == "input":
            cert = certify(model, dataset, sigma, n, alpha, radii, batch_size, device, seed)
        else:
            cert = certify_features(model, dataset, layer, sigma, n, alpha, radii, lipschitz,
                                    batch_size, device, seed)  # fmt: skip
        res = smoothed_metrics(cert)
        res["space"] = "input" if space == "input" else f"feature ({layer})"
        res["seconds"] = cert.info["seconds"]
        if space == "feature":
            res["lipschitz"] = float(np.median(cert.info["lipschitz"]))
            res["lipschitz_kind"] = cert.info["lipschitz_kind"]
        for r, e in zip(res["radii"][1:], eps, strict=True):
            r["eps"] = float(e)
        out.append(res)
    return out
