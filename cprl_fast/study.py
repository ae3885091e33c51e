"""The robustness study: several models over K scene-disjoint folds x several training seeds,
each audited (:func:`cprl_fast.audit.audit`) on its fold's test images, summarised as the mean
over the runs with an interval, and paired against the first model.

One run is one (fold, seed): the models are trained on the fold's training scenes, each chooses
its checkpoint on the validation scenes, and each is audited on (a seeded, per-scene subset of)
the fold's test scenes, at every budget, with the transfer attack crafted on a sibling model of
the same run. Everything is resumable: ``out/runs/fold<k>-seed<s>/`` holds the run's models
(``models/``, not meant for version control), its audits (``audit/<model>/report.json``) and its
finished steps; running the same command again skips what is done. ``out/report.md``,
``report.json`` and ``worst_vs_eps.png`` summarise.

    >>> study("builtin-v2", None, "results/study", TrainConfig(...), folds=3,
    ...       seeds=(0, 1))  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import random
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torchvision.transforms import v2

from cprl_fast import metrics
from cprl_fast.attacks import SUITES
from cprl_fast.audit import DEFAULT_EPS, audit, certified_rows, check_budgets
from cprl_fast.checks import check_seed
from cprl_fast.data.base import IQADataset
from cprl_fast.data.decoded import decoded_once
from cprl_fast.data.transforms import to_tensor
from cprl_fast.installation import machine
from cprl_fast.io import printable, read_json, write_json_atomic
from cprl_fast.presets import MODEL_PRESETS, preset_config
from cprl_fast.render import write_audit, write_study
from cprl_fast.reports import AuditReport, StudyReport, eps_key, is_number
from cprl_fast.reproduce import train_model
from cprl_fast.train import TrainConfig
from cprl_fast.train.checkpoint import weights_digest
from cprl_fast.train.runs import load_run_splits

#: The attacks of every audit in a study (``pgd-soft`` joins for CA models, ``transfer`` always).
STUDY_ATTACKS = SUITES["study"]


def transfer_source(name: str, names: Sequence[str]) -> str:
    """The sibling model whose adversarial images are transferred to ``name``: the first model
    of the study (its reference, the plain ResNet by default) for every other model; for the
    first model itself, the second."""
    if len(names) < 2:
        raise ValueError("a study needs at least two models (the transfer attack's source)")
    return names[1] if name == names[0] else names[0]


def audit_subset(dataset: IQADataset, per_scene: int | None, seed: int,
                 crop: int | None = None) -> IQADataset:  # fmt: skip
    """``per_scene`` images drawn (seeded) from each scene of ``dataset``, in dataset order;
    all of them when ``per_scene`` is None. ``crop``: each image as its central ``crop`` x
    ``crop`` pixels after the dataset's own transform (None: the whole image)."""
    if crop is not None:
        if crop < 32:
            raise ValueError(f"audit crop must be >= 32 px (or None for the whole image), "
                             f"got {crop}")  # fmt: skip
        cropped = v2.Compose([dataset.transform or to_tensor, v2.CenterCrop(crop)])
        dataset = IQADataset(dataset.name, dataset.items, cropped, dataset.skipped,
                             {**dataset.split_info, "audit_crop": crop})  # fmt: skip
    if per_scene is None:
        return dataset
    if per_scene < 3:
        raise ValueError(f"per_scene must be >= 3 (or None for every image), got {per_scene}")
    by_scene: dict[str, list[int]] = {}
    for i, item in enumerate(dataset.items):
        by_scene.setdefault(item.scene, []).append(i)
    rng = random.Random(seed)
    keep = sorted(i for ids in by_scene.values() for i in rng.sample(ids, min(per_scene, len(ids))))
    info = {**dataset.split_info, "subset_per_scene": per_scene, "subset_seed": seed}
    return IQADataset(dataset.name, [dataset.items[i] for i in keep], dataset.transform,
                      dataset.skipped, info)  # fmt: skip


def _settings(dataset, base, folds, seeds, models, eps, attacks, per_scene, audit_crop) -> dict:
    return {"dataset": dataset, "folds": folds, "seeds": list(seeds), "models": list(models),
            "eps": [float(e) for e in eps], "attacks": list(attacks),
            "per_scene": per_scene, "audit_crop": audit_crop,
            "config": dataclasses.asdict(base)}  # fmt: skip


def _short(value: object) -> str:
    """``repr(value)``, escaped and cut to 60 characters: a value read from a file, in one line."""
    text = printable(repr(value))
    return text if len(text) <= 60 else text[:57] + "..."


def _check_settings(out: Path, settings: dict) -> None:
    path = out / "study.json"
    if path.is_file():
        old = read_json(path, "study settings")
        # settings added to TrainConfig since: the old study ran with their defaults
        old["config"] = {**dataclasses.asdict(TrainConfig()), **old.get("config", {})}
        changed = sorted(k for k in settings if old.get(k) != settings[k])
        if "config" in changed:  # name the run settings that differ, not "config" alone
            was, now = old["config"], settings["config"]
            changed.remove("config")
            changed += [f"config.{k} ({_short(was.get(k))}, now {_short(now[k])})"
                        for k in sorted(now) if was.get(k) != now[k]]  # fmt: skip
        if changed:
            raise ValueError(
                f"{out} holds a study with other settings ({', '.join(changed)} differ): "
                "use another out_dir, or remove it to start over"
            )
    else:
        write_json_atomic(path, settings)


def run_one(dataset: str, root: str | None, out: Path, base: TrainConfig, folds: int, fold: int,
            seed: int, models: Sequence[str], eps: Sequence[float], attacks: Sequence[str],
            per_scene: int | None, certify_sigmas: Sequence[float] = (),
            certify_n: int = 1000, audit_crop: int | None = None,
            ) -> dict[str, AuditReport]:  # fmt: skip
    """One (fold, seed): trains ``models`` and audits each; returns ``{model: audit report}``.
    ``certify_sigmas``: also median smoothing (:func:`cprl_fast.certify.certify`, ``certify_n``
    draws) on the same images, added to an audit that lacks it (an audit already done keeps
    its attacks, unless its model had to be trained again and came out with other weights
    than the audit records: then it is audited again, so both parts are of one model)."""
    run_dir = out / "runs" / f"fold{fold}-seed{seed}"
    split_file = out / "splits" / f"fold{fold}.json"
    split_file.parent.mkdir(parents=True, exist_ok=True)
    cfg = dataclasses.replace(base, dataset=dataset, root=root, folds=folds, fold=fold,
                              seed=seed, split_file=str(split_file))  # fmt: skip
    splits = load_run_splits(cfg, ("train", "val", "test"))
    # decoded once for every model's audit
    tested = decoded_once(audit_subset(splits["test"], per_scene, seed=fold, crop=audit_crop))
    trained: dict[str, torch.nn.Module] = {}

    def model(name: str) -> torch.nn.Module:
        """``name`` trained on the run's training scenes: only when an audit still needs it (a
        finished run whose models folder is gone trains nothing)."""
        if name not in trained:
            trained[name] = train_model(name, preset_config(name, cfg), splits["train"],
                                        splits["val"], run_dir)  # fmt: skip
        return trained[name]

    wanted = [{"sigma": float(v), "n": int(certify_n)} for v in certify_sigmas]

    def certify_into(report: AuditReport, name: str) -> None:
        start = time.perf_counter()
        report.certified = certified_rows(
            model(name), tested, eps, certify_sigmas, certify_n, 0.001, cfg.batch_size,
            cfg.device, seed,
        )  # fmt: skip
        report.certify_seconds = time.perf_counter() - start

    def audited(name: str) -> AuditReport:
        """A new audit of ``name`` (certified too where wanted), written once, whole: a run
        cut short leaves no audit whose certificate a later session would take from a model
        trained again."""
        source = model(transfer_source(name, models))
        start = time.perf_counter()
        report = audit(model(name), tested, eps, attacks, cfg.batch_size, cfg.device, seed=seed,
                       title=f"{name} (fold {fold}, seed {seed})", source=source)  # fmt: skip
        report.seconds = time.perf_counter() - start
        report.machine = machine(cfg.device)
        report.transfer_from = transfer_source(name, models)
        report.weights = weights_digest(model(name))
        if wanted:
            certify_into(report, name)
        write_audit(report, run_dir / "audit" / name)
        return report

    reports = {}
    for name in models:
        path = run_dir / "audit" / name / "report.json"
        reports[name] = _audit_report(path) if path.is_file() else audited(name)
    for name in models:  # certification added to audits written without it
        report = reports[name]
        if wanted and [{k: c[k] for k in ("sigma", "n")} for c in report.certified] != wanted:
            if report.weights is not None and weights_digest(model(name)) != report.weights:
                # its model is gone and was trained again with other weights (another machine,
                # a GPU's nondeterminism): the attacks are redone with the certificate
                reports[name] = audited(name)
                continue
            certify_into(report, name)
            write_audit(report, run_dir / "audit" / name)
    return reports


def summarise(runs: dict[str, dict[str, AuditReport]], models: Sequence[str],
              eps: Sequence[float]) -> dict:  # fmt: skip
    """Per model: clean SRCC and worst-case SRCC per eps as :func:`metrics.mean_interval` over
    the runs; per other model, the difference to the first model (paired by run: same fold,
    seed and images) over the runs, and in how many runs the paired bootstrap on the images
    found it significant; the diagnostics that failed, with the runs they failed in; per model
    and eps, the MSU benchmark's scores of the worst case (:func:`metrics.msu_scores`) over the
    runs."""
    keys = ["clean"] + [eps_key(e) for e in eps]

    def condition(rep: AuditReport, key: str) -> dict:
        """The clean metrics, or the worst case at the budget report.json keys as ``key``."""
        return rep.clean if key == "clean" else rep.worst(float(key))

    def values(name: str) -> dict[str, list[float]]:
        return {k: [condition(r[name], k)["srcc"] for r in runs.values()] for k in keys}

    per_model = {n: values(n) for n in models}
    summary: dict = {"models": {}, "versus": {}, "diagnostics": {}, "certified": {}, "msu": {}}
    for n in models:  # the MSU benchmark's scores of the worst case against the clean scores
        per_run = {k: [metrics.msu_scores(r[n].clean["scores"], condition(r[n], k)["scores"])
                       for r in runs.values()] for k in keys[1:]}  # fmt: skip
        summary["msu"][n] = {k: {m: metrics.mean_interval([v[m] for v in vs])
                                 for m in metrics.MSU_SCORES} for k, vs in per_run.items()}
    for n in models:
        summary["certified"][n] = _summarise_certified([r[n] for r in runs.values()])
    for n in models:
        summary["models"][n] = {k: metrics.mean_interval(v, bounds=(-1.0, 1.0))
                                for k, v in per_model[n].items()}  # fmt: skip
        failed: dict[str, list[str]] = {}
        for run, reps in runs.items():
            for check in reps[n].failed:
                failed.setdefault(check, []).append(run)
        summary["diagnostics"][n] = failed
    ref = models[0]
    for n in models[1:]:
        summary["versus"][n] = {}
        for k in keys:
            diffs = np.subtract(per_model[n][k], per_model[ref][k])
            significant = []
            for reps in runs.values():
                ca, cb = condition(reps[n], k), condition(reps[ref], k)
                labels = reps[n].clean["labels"]
                d = metrics.paired_difference(ca["scores"], cb["scores"], labels)
                significant.append(d["significant"] and np.sign(d["difference"]))
            summary["versus"][n][k] = {
                **metrics.mean_interval(diffs, bounds=(-2.0, 2.0)),
                "runs_better": int(sum(1 for s in significant if s > 0)),
                "runs_worse": int(sum(1 for s in significant if s < 0)),
            }
    return summary


def _summarise_certified(reports: list[AuditReport]) -> list[dict]:
    """Per (sigma, n) that every run certified: the smoothed clean SRCC, and per radius the
    mean interval width and the certified SRCC, each as :func:`metrics.mean_interval` over
    the runs, with ``alpha`` and ``images`` (the most any run certified, for the joint
    probability ``1 - images * alpha``); ``[]`` when some run has no certificate."""
    tables = [{(c["sigma"], c["n"]): c for c in r.certified} for r in reports]
    keys = [k for k in tables[0] if all(k in t for t in tables)] if tables else []
    out = []
    for key in keys:
        cs = [t[key] for t in tables]
        radii = []
        for i, r in enumerate(cs[0]["radii"]):
            at = [c["radii"][i] for c in cs]
            radii.append({"radius": r["radius"], "eps": r.get("eps"),
                          "width": metrics.mean_interval([a["width"] for a in at]),
                          "certified_srcc": metrics.mean_interval(
                              [a["certified_srcc"] for a in at], bounds=(-1.0, 1.0))})  # fmt: skip
        out.append({"sigma": key[0], "n": key[1], "alpha": cs[0]["alpha"],
                    "images": max(r.images for r in reports),
                    "smoothed_srcc": metrics.mean_interval([c["srcc"] for c in cs],
                                                           bounds=(-1.0, 1.0)),
                    "radii": radii})  # fmt: skip
    return out


def study(dataset: str, root: str | None, out_dir: str | Path, base: TrainConfig,
          folds: int = 3, seeds: Sequence[int] = (0, 1),
          models: Sequence[str] = ("resnet", "ca", "cprl", "sat"),
          eps: Sequence[float] = DEFAULT_EPS, attacks: Sequence[str] = STUDY_ATTACKS,
          per_scene: int | None = None, command: str = "",
          report_only: bool = False, certify_sigmas: Sequence[float] = (),
          certify_n: int = 1000, share: tuple[int, int] = (0, 1),
          audit_crop: int | None = None) -> dict:  # fmt: skip
    """Runs (or resumes) every (fold, seed) and writes the summary; returns report.json's
    content (``{}`` when ``share`` leaves fewer than 2 finished runs in the folder so far).
    ``per_scene``: audit that many seeded images per test scene (None: all); ``audit_crop``:
    attack and score each as its central ``audit_crop`` px square (None: the whole image; a
    128 px crop of a 256 px image is a quarter of the cost).
    ``report_only``: train nothing, summarise the runs already finished (at least 2) with the
    settings the folder holds (:func:`report_only_summary`: read-only but for the report).
    ``certify_sigmas``, ``certify_n``: median smoothing of every model on its audit's images
    (not a setting the resume check compares: it can be added to a finished study).
    ``share``: ``(k, n)``, this process does runs ``k, k + n, k + 2n, ...`` of the study's
    runs in order (:func:`run_names`), so ``n`` processes (one per GPU or core, or machines
    sharing the folder) split one study; after each of its runs a process writes the summary
    of every run the folder has finished."""
    from cprl_fast.attacks import check_attack_names
    from cprl_fast.data.splits import check_fold

    check_fold(folds, 0)
    models = list(models)
    for n in models:
        if n not in MODEL_PRESETS:
            raise ValueError(f"study model {n!r} is not one of {', '.join(MODEL_PRESETS)}")
    if len(set(models)) != len(models) or len(models) < 2:
        raise ValueError(f"models must be at least two different names, got {models}")
    if not seeds:
        raise ValueError("seeds must name at least one training seed")
    for seed in seeds:
        check_seed(seed, "seeds")
    if len(set(seeds)) != len(seeds):  # one run twice: planned twice, two shares racing for it
        raise ValueError(f"seeds must be different, got {list(seeds)}")
    check_attack_names(attacks)
    check_budgets(eps)
    if audit_crop is not None and not 32 <= audit_crop <= base.image_size:
        raise ValueError(f"audit crop must be between 32 px and the image size "
                         f"({base.image_size} px), got {audit_crop}")  # fmt: skip
    out = Path(out_dir)
    if report_only:
        return report_only_summary(out, command)
    out.mkdir(parents=True, exist_ok=True)
    settings = _settings(dataset, base, folds, seeds, models, eps, attacks, per_scene,
                         audit_crop)
    _check_settings(out, settings)
    split_file = str(out / "splits" / "fold0.json")
    cfg = dataclasses.replace(base, dataset=dataset, root=root, folds=folds, fold=0,
                              split_file=split_file)  # fmt: skip
    s = load_run_splits(cfg, ("train", "val", "test"))
    sizes = {"train": len(s["train"]), "val": len(s["val"]), "test": len(s["test"]),
             "tested": len(audit_subset(s["test"], per_scene, 0, audit_crop)),
             "planned": folds * len(seeds)}  # fmt: skip
    index, count = check_share(share)
    mine = run_names(folds, seeds)[index::count]
    for k, (name, fold, seed) in enumerate(mine, 1):
        # a line per run above its training and audit bars (a bar around them would nest
        # theirs, which writes cursor movements into a log)
        share_note = f" (share {index}/{count})" if count > 1 else ""
        print(f"study: run {k} of {len(mine)}{share_note}: {name}", file=sys.stderr, flush=True)
        run_one(dataset, root, out, base, folds, fold, seed, models, eps, attacks, per_scene,
                certify_sigmas, certify_n, audit_crop)  # fmt: skip
        runs = finished_runs(out, models, folds, seeds)
        if len(runs) >= 2:  # a partial report after every run: a stopped study keeps one
            write_study(StudyReport(settings, command, sizes, summarise(runs, models, eps),
                                    runs), out)  # fmt: skip
    runs = finished_runs(out, models, folds, seeds)
    if len(runs) < 2:
        if count > 1:
            return {}
        raise ValueError(f"{out} has {len(runs)} finished run(s): a summary needs 2 or more")
    return read_json(out / "report.json", "study report")


def run_names(folds: int, seeds: Sequence[int]) -> list[tuple[str, int, int]]:
    """The runs of a study in the order it does them, as ``(name, fold, seed)``: seeds outside
    folds, so a study stopped early has covered every fold with the first seed."""
    return [(f"fold{fold}-seed{seed}", fold, seed) for seed in seeds for fold in range(folds)]


def check_share(share: tuple[int, int]) -> tuple[int, int]:
    """``(k, n)`` checked: ``n >= 1`` processes share a study, this one is ``0 <= k < n``."""
    index, count = share
    if count < 1 or not 0 <= index < count:
        raise ValueError(f"share must be K/N with 0 <= K < N, got {index}/{count}")
    return index, count


def finished_runs(out: Path, models: Sequence[str], folds: int,
                  seeds: Sequence[int]) -> dict[str, dict[str, AuditReport]]:  # fmt: skip
    """The runs of the study in ``out`` whose every model's audit is written, in run order:
    ``{run name: {model: audit report}}``."""
    runs = {}
    for name, _, _ in run_names(folds, seeds):
        paths = {m: out / "runs" / name / "audit" / m / "report.json" for m in models}
        if all(p.is_file() for p in paths.values()):
            runs[name] = {m: _audit_report(p) for m, p in paths.items()}
    return runs


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


#: What each entry of study.json must be, as :func:`_check_settings_file` checks it.
_SETTINGS_LAYOUT: dict[str, tuple[str, Callable[[object], bool]]] = {
    "models": (f"a list of at least two of {', '.join(MODEL_PRESETS)}",
               lambda v: isinstance(v, list) and len(v) >= 2
               and all(isinstance(m, str) and m in MODEL_PRESETS for m in v)),
    "eps": ("a list of budgets in (0, 1]",
            lambda v: isinstance(v, list) and all(is_number(e, null=False) and 0 < e <= 1
                                                  for e in v)),
    "folds": ("an integer >= 2", lambda v: _is_int(v) and v >= 2),
    "seeds": ("a list of integer seeds", lambda v: isinstance(v, list) and v
              and all(map(_is_int, v))),
    "dataset": ("a dataset name", lambda v: isinstance(v, str)),
    "per_scene": ("an integer >= 1 or null", lambda v: v is None or (_is_int(v) and v >= 1)),
    "config": ("an object of training settings", lambda v: isinstance(v, dict)),
}  # fmt: skip


def _check_settings_file(settings: object, path: Path) -> None:
    """Raises ``ValueError`` naming ``path`` and the entry unless ``settings`` (study.json) is
    an object with every entry of :data:`_SETTINGS_LAYOUT` as it says."""
    if not isinstance(settings, dict) or any(k not in settings for k in _SETTINGS_LAYOUT):
        raise ValueError(f"study settings {path} must be an object with "
                         f"{', '.join(_SETTINGS_LAYOUT)}")  # fmt: skip
    for key, (what, ok) in _SETTINGS_LAYOUT.items():
        if not ok(settings[key]):
            raise ValueError(f"study settings {path}: {key} must be {what}, got "
                             f"{_short(settings[key])}")  # fmt: skip


def report_only_summary(out: str | Path, command: str = "") -> dict:
    """The summary of the runs a study folder has finished, from its files alone: its settings
    (``study.json``), its finished audits and its sizes (``report.json``, or the fold-0 split
    file). Reads no model file, trains and generates nothing, and writes only report.json,
    report.md and worst_vs_eps.png. A malformed file is an error naming it."""
    out = Path(out)
    settings = read_json(out / "study.json", "study settings")
    _check_settings_file(settings, out / "study.json")
    models, eps = list(settings["models"]), [float(e) for e in settings["eps"]]
    runs = finished_runs(out, models, int(settings["folds"]), settings["seeds"])
    if len(runs) < 2:
        raise ValueError(f"{out} has {len(runs)} finished run(s): a summary needs 2 or more")
    sizes = _stored_sizes(out, settings, runs)
    old = out / "report.json"
    if old.is_file():  # the command that ran the study, not this summary's
        command = str(read_json(old, "study report").get("command", "")) or command
    write_study(StudyReport(settings, command, sizes, summarise(runs, models, eps), runs), out)
    return read_json(out / "report.json", "study report")


def _audit_report(path: Path) -> AuditReport:
    return AuditReport.from_json(read_json(path, "audit report"), path)


def _stored_sizes(out: Path, settings: dict, runs: dict) -> dict:
    """The split sizes of a study from its report.json, else from its fold-0 split file."""
    planned = int(settings["folds"]) * len(settings["seeds"])
    report = out / "report.json"
    if report.is_file():
        data = read_json(report, "study report")
        sizes = data.get("sizes") if isinstance(data, dict) else None
        if isinstance(sizes, dict) and {"train", "val", "test", "tested"} <= set(sizes):
            return {**sizes, "planned": planned}
    split = out / "splits" / "fold0.json"
    counts = read_json(split, "split file").get("counts", {}) if split.is_file() else {}
    first = next(iter(next(iter(runs.values())).values()))
    return {"train": counts.get("train_images", "?"), "val": counts.get("val_images", "?"),
            "test": counts.get("test_images", "?"), "tested": first.images,
            "planned": planned}  # fmt: skip
