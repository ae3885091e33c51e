"""The typed results of an audit (:class:`AuditReport`, its checks :class:`Check`) and of a
study (:class:`StudyReport`), and the two labels every table, figure and file uses for them:
a budget as people write it (:func:`eps_label`, ``1/255``) and as report.json keys it
(:func:`eps_key`). Rendering them is :mod:`cprl_fast.render`'s; JSON comes from ``to_json``,
in the layout the committed reports under ``results/`` have, and ``from_json`` reads it back.

Metrics (one condition: the clean images, one attack, or the worst case) stay the dicts
:func:`cprl_fast.evaluate.evaluate` returns: ``srcc``, ``plcc``, ``krcc``, ``mse``,
``score_change``, ``srcc_ci`` and ``plcc_ci`` (95% bootstrap intervals over the images),
``scores`` and ``labels`` (per image; SRCC and PLCC are unitless, scores and labels on [0, 1]),
and for the worst case ``from``, the attack or per-image combination it came from.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cprl_fast.metrics import lowest

Metrics = dict[str, Any]


def eps_label(eps: float) -> str:
    """A budget in pixel units as the flags and tables write it: ``1/255``."""
    return f"{eps * 255:g}/255"


def eps_key(eps: float) -> str:
    """A budget as report.json keys its results: ``str(float(eps))``."""
    return str(float(eps))


def interval(value: float, ci: Sequence[float] | None, digits: int = 3, signed: bool = False,
             bold: bool = False) -> str:  # fmt: skip
    """``0.512 [0.401, 0.600]``; the value alone when the interval is missing or NaN;
    ``signed``: differences, ``+0.012 [-0.030, +0.051]``; ``bold``: the value in markdown
    bold."""
    f = f"{'+' if signed else ''}.{digits}f"
    text = f"**{value:{f}}**" if bold else f"{value:{f}}"
    if ci is None or any(math.isnan(float(v)) for v in ci):
        return text
    lo, hi = ci
    return f"{text} [{lo:{f}}, {hi:{f}}]"


@dataclass(frozen=True)
class Check:
    """One gradient-masking diagnostic: its name, the budget it looked at (None: all budgets),
    whether it passed and what it measured."""

    check: str
    eps: float | None
    passed: bool
    detail: str

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Check:
        return cls(str(data["check"]), None if data.get("eps") is None else float(data["eps"]),
                   bool(data["passed"]), str(data.get("detail", "")))  # fmt: skip


def worst_of(results: dict[str, Metrics]) -> Metrics:
    """The worst case of one budget's results: its ``worst`` entry, else (one attack) the
    attack with the lowest SRCC (an undefined one only if all are: :func:`metrics.lowest`),
    with its name as ``from`` as the entry has it."""
    if results.get("worst"):
        return results["worst"]
    name = lowest({k: r["srcc"] for k, r in results.items() if k != "clean"})
    return {**results[name], "from": name}


@dataclass
class AuditReport:
    """What :func:`cprl_fast.audit.audit` measured on one model.

    ``results``: budget (pixel units) -> condition (``clean``, each attack, ``worst``) ->
    metrics; ``unbounded``: attack -> ``{"srcc"}`` at eps = 1; ``certified``: the rows of
    :func:`cprl_fast.audit.certified_rows` (empty without certificates). ``seconds``,
    ``transfer_from``, ``certify_seconds``, ``machine``, ``weights``: what a study adds (audit
    time, the model the transfer attack was crafted on, certification time, the machine the
    audit ran on: :func:`cprl_fast.installation.machine`, and the SHA-256 of the audited
    weights: :func:`cprl_fast.train.checkpoint.weights_digest`)."""

    model: str
    images: int
    attacks: list[str]
    eps: list[float]
    results: dict[float, dict[str, Metrics]]
    unbounded: dict[str, dict[str, float]]
    diagnostics: list[Check]
    certified: list[dict[str, Any]] = field(default_factory=list)
    seconds: float | None = None
    transfer_from: str | None = None
    certify_seconds: float | None = None
    machine: dict[str, str] | None = None
    weights: str | None = None

    @property
    def clean(self) -> Metrics:
        """The metrics on the unattacked images (the same at every budget)."""
        return next(iter(self.results.values()))["clean"]

    def worst(self, eps: float) -> Metrics:
        """The worst case at budget ``eps``."""
        return worst_of(self.results[float(eps)])

    @property
    def failed(self) -> list[str]:
        """The names of the checks that failed, in report order."""
        return [c.check for c in self.diagnostics if not c.passed]

    def brief(self) -> dict[str, Any]:
        """Clean SRCC, per budget (keyed as report.json keys it) the worst-case SRCC and the
        attack it came from, and the failed checks: a study's per-run row."""
        worst = {eps_key(e): (self.worst(e)["srcc"], self.worst(e).get("from", ""))
                 for e in self.results}  # fmt: skip
        return {"clean_srcc": self.clean["srcc"], "worst": worst, "failed": self.failed}

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "model": self.model, "images": self.images, "attacks": list(self.attacks),
            "eps": [float(e) for e in self.eps],
            "results": {eps_key(e): r for e, r in self.results.items()},
            "unbounded": self.unbounded, "diagnostics": [c.to_json() for c in self.diagnostics],
        }  # fmt: skip
        if self.certified:
            out["certified"] = self.certified
        for name in ("seconds", "transfer_from", "certify_seconds", "machine", "weights"):
            if getattr(self, name) is not None:
                out[name] = getattr(self, name)
        return out

    @classmethod
    def from_json(cls, data: Any, path: str | Path = "audit report") -> AuditReport:
        """An audit report read back from report.json; a file without the fields an audit
        writes is an error naming it."""
        need = {"model", "images", "attacks", "eps", "results", "diagnostics"}
        if not isinstance(data, dict) or not need <= set(data):
            raise ValueError(f"audit report {path} must be an object with "
                             f"{', '.join(sorted(need))}")  # fmt: skip
        try:
            report = cls(
                model=str(data["model"]), images=int(data["images"]),
                attacks=[str(a) for a in data["attacks"]], eps=[float(e) for e in data["eps"]],
                results={float(k): v for k, v in data["results"].items()},
                unbounded=data.get("unbounded", {}),
                diagnostics=[Check.from_json(c) for c in data["diagnostics"]],
                certified=list(data.get("certified", [])), seconds=data.get("seconds"),
                transfer_from=data.get("transfer_from"),
                certify_seconds=data.get("certify_seconds"),
                machine=_machine(data.get("machine")), weights=_digest(data.get("weights")),
            )  # fmt: skip
            report.check_layout()
            return report
        except (TypeError, ValueError, KeyError, AttributeError) as err:
            raise ValueError(f"audit report {path} is malformed: {err}") from None

    def check_layout(self) -> None:
        """Raises ``ValueError`` saying where, unless every budget holds ``clean``, every
        condition metrics with a number (or null) ``srcc``, per-image lists of ``images``
        numbers, and every certificate row the numbers a study reads (a hand-edited or hostile
        report.json would otherwise fail deep inside a summary with a bare ``KeyError``)."""
        for eps, conditions in self.results.items():
            if not isinstance(conditions, dict) or "clean" not in conditions:
                raise ValueError(f"results[{eps_label(eps)}] has no 'clean' metrics")
            for name, m in conditions.items():
                _check_metrics(m, f"results[{eps_label(eps)}][{name!r}]", self.images)
        for k, row in enumerate(self.certified):
            where = f"certified[{k}]"
            if not isinstance(row, dict) or not isinstance(row.get("radii"), list):
                raise ValueError(f"{where} must be an object with a list 'radii'")
            _check_numbers(row, ("sigma", "n", "alpha", "srcc"), where)
            for j, r in enumerate(row["radii"]):
                if not isinstance(r, dict):
                    raise ValueError(f"{where}['radii'][{j}] must be an object")
                _check_numbers(r, ("radius", "width", "certified_srcc"), f"{where}['radii'][{j}]")


def is_number(value: Any, null: bool = True) -> bool:
    """A JSON number (not a boolean), or with ``null`` also None (an undefined metric is
    written as null): the check of every number read from a report or study file."""
    if value is None:
        return null
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _machine(value: Any) -> dict[str, str] | None:
    """A report's ``machine`` read back: absent (None), or an object of at most 16 short
    strings (it is printed into a study's report.md)."""
    if value is None:
        return None
    if (not isinstance(value, dict) or len(value) > 16
            or not all(isinstance(k, str) and isinstance(v, str) and len(k) + len(v) <= 200
                       for k, v in value.items())):  # fmt: skip
        raise ValueError("'machine' must be an object of at most 16 short strings")
    return dict(value)


def _digest(value: Any) -> str | None:
    """A report's ``weights`` read back: absent (None), or 64 lower-case hex digits."""
    if value is None:
        return None
    if not (isinstance(value, str) and re.fullmatch(r"[0-9a-f]{64}", value)):
        raise ValueError("'weights' must be a SHA-256 of 64 hex digits")
    return value


def _check_numbers(data: dict, keys: Sequence[str], where: str) -> None:
    for key in keys:
        if key not in data or not is_number(data[key]):
            raise ValueError(f"{where} needs a number (or null) {key!r}")


def _check_metrics(m: Any, where: str, images: int) -> None:
    """One condition's metrics: a number (or null) ``srcc``; ``scores`` and ``labels``, where
    present, ``images`` numbers each; ``*_ci``, where present, two numbers (or null)."""
    if not isinstance(m, dict):
        raise ValueError(f"{where} must be an object of metrics")
    _check_numbers(m, ("srcc",), where)
    for key, size in (("scores", images), ("labels", images), ("srcc_ci", 2), ("plcc_ci", 2)):
        value = m.get(key, [None] * size)
        if not (isinstance(value, list) and len(value) == size and all(map(is_number, value))):
            raise ValueError(f"{where}[{key!r}] must be a list of {size} numbers")


@dataclass
class StudyReport:
    """What :func:`cprl_fast.study.study` summarises: its ``settings`` (study.json), the command
    that ran it, the split ``sizes``, the ``summary`` of :func:`cprl_fast.study.summarise`
    (per model and budget, means over the runs with intervals; paired differences to the first
    model; failed checks; certificates) and, per run and model, its audit."""

    settings: dict[str, Any]
    command: str
    sizes: dict[str, Any]
    summary: dict[str, Any]
    runs: dict[str, dict[str, AuditReport]]

    @property
    def models(self) -> list[str]:
        return list(self.settings["models"])

    @property
    def eps(self) -> list[float]:
        return [float(e) for e in self.settings["eps"]]

    def to_json(self) -> dict[str, Any]:
        """report.json: everything but the per-image data, which each run's audit keeps."""
        return {
            "settings": self.settings, "command": self.command, "sizes": self.sizes,
            "summary": self.summary,
            "runs": {run: {n: r.brief() for n, r in reps.items()}
                     for run, reps in self.runs.items()},
        }  # fmt: skip
