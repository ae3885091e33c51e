"""The one place results become markdown, CSV, JSON and figures: the clean-and-attacked tables
of evaluate and reproduce (:func:`write_results`), report.md and srcc_vs_eps.png (and
certified.png) of an audit, report.md and worst_vs_eps.png of a study.
Every interval is written by :func:`cprl_fast.reports.interval`, every budget by
:func:`cprl_fast.reports.eps_label`, every certified table by :func:`certified_table` and every
curve against the budget by :func:`plot_against_eps`."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cprl_fast import metrics
from cprl_fast.data.base import LOADERS
from cprl_fast.evaluate import COLUMNS, Results, compare
from cprl_fast.figures import new_figure, save_figure
from cprl_fast.io import csv_cell, markdown_cell, write_json_atomic, write_text_atomic
from cprl_fast.presets import MODEL_PRESETS
from cprl_fast.reports import AuditReport, StudyReport, eps_key, eps_label, interval


@dataclass
class Curve:
    """One line of a figure against the budget: x in /255 units, y, an optional band (lower,
    upper per point) drawn in the line's colour."""

    label: str
    x: Sequence[float]
    y: Sequence[float]
    band: Sequence[Sequence[float]] | None = None
    style: dict | None = None


def plot_against_eps(curves: Sequence[Curve], path: Path, title: str, xlabel: str, ylabel: str,
                     clean: float | None = None, zero: bool = False,
                     legend_outside: bool = True) -> None:  # fmt: skip
    """The curves against the budget, bands shaded; ``clean``: a dotted line at the clean
    value; ``zero``: a faint line at 0; the legend right of the axes, off the data (or, with
    ``legend_outside`` false, where it covers least)."""
    fig = new_figure(figsize=(5.5, 3.8))
    ax = fig.subplots()
    for c in curves:
        line = ax.plot(c.x, c.y, **{"marker": "o", "lw": 1, "label": c.label, **(c.style or {})})
        if c.band is not None:
            band = np.asarray(c.band, dtype=float)
            ax.fill_between(c.x, band[:, 0], band[:, 1], color=line[0].get_color(), alpha=0.15)
    if clean is not None:
        ax.axhline(clean, ls=":", color="grey", label="clean")
    if zero:
        ax.axhline(0.0, color="grey", lw=0.8, ls=":")
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    if legend_outside:
        ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    else:
        ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)


#: The certified table's columns after its first (the model, or the space smoothed in).
CERTIFIED_COLUMNS = ("sigma", "radius (L2)", "holds L-inf eps", "n", "smoothed SRCC (clean)",
                     "mean width", "certified SRCC")  # fmt: skip


def certified_table(first: str, rows: Sequence[Sequence[str]],
                    extra: Sequence[str] = ()) -> list[str]:  # fmt: skip
    """A certified table's lines: ``first`` names the leading column, each row holds its
    cells (already formatted), ``extra`` further columns."""
    heads = [first, *CERTIFIED_COLUMNS, *extra]
    return ["| " + " | ".join(heads) + " |", "| --- |" + " ---: |" * (len(heads) - 1),
            *("| " + " | ".join(r) + " |" for r in rows)]  # fmt: skip


def _holds(r: dict) -> str:
    return "-" if r.get("eps") is None else eps_label(r["eps"])


# --- evaluate's and reproduce's tables -------------------------------------------------------


def _number(value: float | None, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _with_ci(m: dict, name: str) -> str:
    return interval(m[name], m.get(f"{name}_ci"), digits=4)


def write_results(
    results: Results, out_dir: str | Path, title: str = "Clean and attacked quality prediction"
) -> dict[str, Path]:
    """Writes ``{model: {condition: metrics}}`` as results.json, results.csv and results.md."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "results.json", "csv": out / "results.csv", "md": out / "results.md"}
    write_json_atomic(paths["json"], results)
    ci = {c: f"{c}_ci" for c in ("srcc", "plcc")}
    table = io.StringIO()
    w = csv.writer(table, lineterminator="\n")
    w.writerow(["model", "condition", *COLUMNS, "srcc_lo", "srcc_hi", "plcc_lo", "plcc_hi"])
    for model, conds in results.items():
        for cond, m in conds.items():
            bounds = [f"{v:.6f}" for c in ci.values() for v in m.get(c, [float("nan")] * 2)]
            w.writerow([csv_cell(model), cond, *(_number(m[c], 6) for c in COLUMNS), *bounds])
    write_text_atomic(paths["csv"], table.getvalue())
    lines = [f"# {title}", "", "| model | condition | " + " | ".join(COLUMNS) + " |",
             "| --- | --- |" + " ---: |" * len(COLUMNS)]  # fmt: skip
    for model, conds in results.items():
        for cond, m in conds.items():
            name = f"worst ({m['from']})" if cond == "worst" else cond
            cells = [_with_ci(m, c) if c in ci else _number(m[c]) for c in COLUMNS]
            lines.append(f"| {markdown_cell(model)} | {name} | " + " | ".join(cells) + " |")
    n = len(next(iter(next(iter(results.values())).values())).get("scores", []))
    worst = any("worst" in conds for conds in results.values())
    lines += ["", f"SRCC and PLCC with 95% bootstrap intervals over the {n} images "
              f"(resampled {metrics.BOOTSTRAP_RESAMPLES} times)"
              + ("; `worst`: the lowest SRCC over the attacks and their per-image combination "
                 "with the clean images (AutoAttack-style)." if worst else ".")]  # fmt: skip
    models = list(results)
    first = models[0] if models else ""
    for other in models[1:]:  # each model against the first (the reference)
        diffs = compare(results, other, first)
        a, b = markdown_cell(other), markdown_cell(first)
        lines += ["", f"SRCC({a}) - SRCC({b}) on the same images, paired bootstrap 95% "
                  f"interval (positive: {a} ranks the images better than {b}):", "",
                  "| condition | difference | interval | significant |",
                  "| --- | ---: | --- | --- |"]  # fmt: skip
        for cond, d in diffs.items():
            lo, hi = d["ci"]
            mark = "yes" if d["significant"] else "no"
            lines.append(f"| {cond} | {d['difference']:+.4f} | [{lo:+.4f}, {hi:+.4f}] | {mark} |")
    write_text_atomic(paths["md"], "\n".join(lines) + "\n")
    return paths


# --- an audit ------------------------------------------------------------------------------


def write_audit(report: AuditReport, out: Path) -> dict[str, Path]:
    """report.json, report.md (tables with intervals, the worst case, the diagnostics) and
    srcc_vs_eps.png (SRCC of each attack and the worst case, with its interval, against eps);
    with certificates, certified.png."""
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "report.json", "md": out / "report.md", "png": out / "srcc_vs_eps.png"}
    write_json_atomic(paths["json"], report.to_json())
    clean = report.clean
    lines = [f"# Robustness audit: {markdown_cell(report.model)}", "",
             f"{report.images} images; clean SRCC {interval(clean['srcc'], clean['srcc_ci'])}, "
             f"PLCC {clean['plcc']:.3f}. Attacks: {', '.join(report.attacks)}. Brackets: "
             "95% bootstrap intervals over the images.", "",
             "| eps | " + " | ".join(report.attacks) + " | worst |",
             "| --- |" + " ---: |" * (len(report.attacks) + 1)]  # fmt: skip
    for e in sorted(report.results):
        res = report.results[e]
        w = report.worst(e)
        cells = [f"{res[a]['srcc']:.3f}" for a in report.attacks]
        cells.append(f"{interval(w['srcc'], w.get('srcc_ci'), bold=True)} ({w.get('from', '')})")
        lines.append(f"| {eps_label(e)} | " + " | ".join(cells) + " |")
    failed = report.failed
    lines += ["", "## Gradient-masking diagnostics", "",
              ("All passed." if not failed else
               f"**{len(failed)} failed: the white-box numbers above may overstate robustness.**"),
              "", "| check | result | detail |", "| --- | --- | --- |"]  # fmt: skip
    lines += [f"| {c.check} | {'pass' if c.passed else '**FAIL**'} | {c.detail} |"
              for c in report.diagnostics]  # fmt: skip
    lines += ["", "![SRCC against eps](srcc_vs_eps.png)", "",
              "*SRCC of each attack and of the worst case (band: its 95% interval) against the "
              "budget eps; the dotted line is the clean SRCC.*"]  # fmt: skip
    if report.certified:
        paths["certified"] = out / "certified.png"
        lines += _audit_certified_lines(report)
        _plot_audit_certified(report, paths["certified"])
    write_text_atomic(paths["md"], "\n".join(lines) + "\n")
    _plot_audit(report, paths["png"])
    return paths


def _audit_certified_lines(report: AuditReport) -> list[str]:
    first = report.certified[0]
    lines = ["", "## Certified (median smoothing)", "",
             f"The smoothed model scores an image by the median of the model's scores over "
             f"{first['n']} Gaussian noise draws of standard deviation sigma; each interval holds "
             f"for every L2 perturbation up to the radius with probability "
             f"{1 - first['alpha']:g} (cprl_fast/certify.py, docs/maths.md §8). Radius "
             "eps*sqrt(d) is the L2 ball holding the L-infinity ball of eps. Certified SRCC: "
             "a lower bound on the SRCC of any scores inside the intervals, holding with "
             f"probability {max(0.0, 1 - report.images * first['alpha']):g} (all "
             f"{report.images} intervals at once).", ""]  # fmt: skip
    feature = [c for c in report.certified if c.get("space", "input") != "input"]
    if feature:
        c = feature[0]
        lines += [f"Feature-space rows (FS-IQA): the noise (sigma in feature units) is added to "
                  f"the features of {c['space'].split('(')[1].rstrip(')')}, whose input-to-"
                  f"feature Lipschitz constant L (median over the images {c['lipschitz']:.3g}) "
                  f"turns an input radius r into the feature radius L r; L is the "
                  f"{c['lipschitz_kind']}. Time: seconds for the whole certificate.",
                  ""]  # fmt: skip
    rows = [[c.get("space", "input"), f"{c['sigma']:g}", f"{r['radius']:.3f}", _holds(r),
             f"{c['n']}", interval(c["srcc"], c.get("srcc_ci")), f"{r['width']:.3f}",
             f"{r['certified_srcc']:.3f}", f"{c.get('seconds', float('nan')):.1f}"]
            for c in report.certified for r in c["radii"]]  # fmt: skip
    lines += certified_table("space", rows, extra=("time s",))
    lines += ["", "![certified SRCC](certified.png)", "",
              "*Certified SRCC of the smoothed model at each sigma (the L2 ball holding each "
              "L-infinity ball) beside the empirical worst-case SRCC of the model itself "
              "under the attack suite, against eps. The certified curves are lower bounds that "
              "hold with the probability stated above, and for another model (the smoothed "
              "one); the empirical curve is an upper estimate for this one.*"]  # fmt: skip
    return lines


def _plot_audit(report: AuditReport, path: Path) -> None:
    eps = sorted(report.results)
    x = [e * 255 for e in eps]
    curves = [Curve(a, x, [report.results[e][a]["srcc"] for e in eps]) for a in report.attacks]
    worst = [report.worst(e) for e in eps]
    curves.append(Curve("worst", x, [w["srcc"] for w in worst],
                        band=[w.get("srcc_ci", (np.nan, np.nan)) for w in worst],
                        style={"color": "black", "lw": 2, "marker": None}))  # fmt: skip
    plot_against_eps(curves, path, f"{report.model}: SRCC under attack",
                     "budget eps (/255, L-infinity)", "SRCC (band: worst case's 95% interval)",
                     clean=report.clean["srcc"])  # fmt: skip


def _plot_audit_certified(report: AuditReport, path: Path) -> None:
    eps = sorted(report.results)
    curves = [Curve("empirical worst case (model)", [e * 255 for e in eps],
                    [report.worst(e)["srcc"] for e in eps],
                    style={"color": "black", "lw": 2})]  # fmt: skip
    for c in report.certified:
        pts = [(r["eps"] * 255, r["certified_srcc"]) for r in c["radii"] if "eps" in r]
        x, y = zip(*pts, strict=True)
        curves.append(Curve(f"certified, {c.get('space', 'input')} sigma={c['sigma']:g}", x, y,
                            style={"marker": "s", "ls": "--", "lw": 1.5}))  # fmt: skip
    plot_against_eps(curves, path, f"{report.model}: certified and empirical",
                     "budget eps (/255, L-infinity; certified at L2 radius eps*sqrt(d))",
                     "SRCC")  # fmt: skip


# --- a study -------------------------------------------------------------------------------


def _over_runs(m: dict, text: str) -> str:
    """``text`` (a :func:`metrics.mean_interval` over the runs, formatted) and, where some
    runs' value is undefined (an SRCC of constant scores), over how many runs it is."""
    undefined = m.get("undefined", 0)
    if not undefined:
        return text
    runs = m["n"] + undefined
    if m["n"] == 0:
        return f"undefined in all {runs} runs (constant scores)"
    return f"{text} ({m['n']} of {runs} runs; constant scores in the rest)"


def _cell(m: dict) -> str:
    return _over_runs(m, interval(m["mean"], m["ci"]))


def _signed(m: dict) -> str:
    lo, hi = m["ci"]
    verdict = "" if np.isnan(lo) else (" (excludes 0)" if lo > 0 or hi < 0 else "")
    return _over_runs(m, interval(m["mean"], m["ci"], signed=True) + verdict
                      + f"; runs better/worse {m['runs_better']}/{m['runs_worse']}")  # fmt: skip


def _study_msu_lines(summary: dict, models, eps, n_runs: int) -> list[str]:
    """The MSU benchmark's scores of each model's worst case, one table per score (absent in
    a summary written before they were added)."""
    if not summary.get("msu"):
        return []
    lines = ["", "## The MSU benchmark's scores of the worst case", "",
             "The scores of the metrics-robustness benchmark of Antsiferova et al. (2024) on the "
             "worst case's scores against the clean ones, both min-max scaled by the clean "
             "scores' range (docs/maths.md §6): robustness score R (higher: more robust), "
             "absolute and relative gain (signed; an attack that lowers scores has a negative "
             f"gain). Mean over the {n_runs} runs [95% t-interval]."]  # fmt: skip
    for metric, title in metrics.MSU_SCORES.items():
        lines += ["", f"| {title} | " + " | ".join(f"worst {eps_label(e)}" for e in eps) + " |",
                  "| --- |" + " ---: |" * len(eps)]  # fmt: skip
        for n in models:
            cells = [_cell(summary["msu"][n][eps_key(e)][metric]) for e in eps]
            lines.append(f"| {MODEL_PRESETS[n][0]} | " + " | ".join(cells) + " |")
    return lines


def audit_machines(reports: Sequence[AuditReport]) -> str:
    """What a study's report says of the machines its audits ran on (``, on ...``; each
    distinct one once, its values escaped for a markdown line), or ``""`` where none said."""
    said = sorted({", ".join(f"{k} {v}" for k, v in r.machine.items())
                   for r in reports if r.machine})  # fmt: skip
    if not said:
        return ""
    silent = sum(1 for r in reports if not r.machine)
    return (", on " + "; ".join(markdown_cell(m) for m in said)
            + (f" ({silent} of {len(reports)} audits recorded no machine)" if silent else ""))


def write_study(report: StudyReport, out: Path) -> None:
    """report.json, report.md and worst_vs_eps.png under ``out``."""
    settings, runs, summary, sizes = report.settings, report.runs, report.summary, report.sizes
    models, eps = report.models, report.eps
    keys = ["clean"] + [eps_key(e) for e in eps]
    heads = ["clean"] + [f"worst {eps_label(e)}" for e in eps]
    n_runs = len(runs)
    seconds = sum(r.seconds or 0.0 for reps in runs.values() for r in reps.values())
    machines = audit_machines([r for reps in runs.values() for r in reps.values()])
    write_json_atomic(out / "report.json", report.to_json())
    cfg = settings["config"]
    lines = [
        f"# Robustness study on `{settings['dataset']}`", "",
        f"Command: `{report.command}`", "",
        (f"**Partial: {n_runs} of {sizes['planned']} runs finished; the same command resumes "
         "the rest.**\n\n" if n_runs < sizes.get("planned", n_runs) else "")
        + f"{settings['folds']} scene-disjoint folds x seeds {settings['seeds']}: {n_runs} runs "
        f"({', '.join(runs)}). "
        f"Per run: train {sizes['train']} / val {sizes['val']} "
        + ("(chooses the checkpoint) images; " if sizes["val"] else
           "images (no validation split: the last checkpoint); ")
        + f"audited on {sizes['tested']} test images "
        + (f"({settings['per_scene']} drawn per test scene) " if settings["per_scene"] else "")
        + f"of {sizes['test']}"
        + (f", each attacked and scored as its central {settings['audit_crop']} px"
           if settings.get("audit_crop") else "")
        + ". "
        + f"{cfg['model_options'].get('arch', '')} at {cfg['image_size']} px, "
        f"{cfg['epochs']} epochs, batch {cfg['batch_size']}, lr {cfg['lr']:g}. Attacks at every "
        f"budget (L-infinity): {', '.join(settings['attacks'])}, pgd-soft (models with CA "
        "modules) and transfer (10-step score reflection crafted on the run's first model; for "
        f"that model, on the second). Audit time {seconds / 60:.0f} min in all{machines}.", "",
        "The worst case per image set and budget is the lowest SRCC over the attacks and their "
        "per-image combination (docs/maths.md §5). Cells: mean over the runs [95% t-interval "
        f"over the {n_runs} runs]; the runs share data, so read the interval as run-to-run "
        "spread, not an exact test.", "",
        "## SRCC, clean and worst case", "",
        "| model | " + " | ".join(heads) + " |", "| --- |" + " ---: |" * len(heads),
    ]  # fmt: skip
    for n in models:
        cells = [_cell(summary["models"][n][k]) for k in keys]
        lines.append(f"| {MODEL_PRESETS[n][0]} | " + " | ".join(cells) + " |")
    ref = MODEL_PRESETS[models[0]][0]
    lines += ["", f"## Difference to {ref} (same runs, same images)", "",
              "Mean difference in SRCC [95% t-interval over the runs]; runs better/worse: in "
              "how many runs a paired bootstrap over the images found the model significantly "
              f"better/worse than {ref}.", "",
              "| model | " + " | ".join(heads) + " |",
              "| --- |" + " --- |" * len(heads)]  # fmt: skip
    for n in models[1:]:
        cells = [_signed(summary["versus"][n][k]) for k in keys]
        lines.append(f"| {MODEL_PRESETS[n][0]} | " + " | ".join(cells) + " |")
    lines += _study_msu_lines(summary, models, eps, n_runs)
    lines += ["", "## Gradient-masking diagnostics", "",
              "Checks of cprl_fast/audit.py per run; a failed check means that model's white-box "
              "numbers may overstate its robustness.", ""]  # fmt: skip
    for n in models:
        failed = summary["diagnostics"][n]
        text = ("all passed in every run" if not failed else
                "; ".join(f"{c} failed in {len(r)}/{n_runs} runs ({', '.join(r)})"
                          for c, r in sorted(failed.items())))  # fmt: skip
        lines.append(f"- {MODEL_PRESETS[n][0]}: {text}")
    lines += _study_certified_lines(summary, models, n_runs)
    lines += ["", "![worst-case SRCC against eps](worst_vs_eps.png)", "",
              "*Worst-case SRCC over the attack suite against the budget eps (0: clean), mean "
              f"over the {n_runs} fold x seed runs; bands: 95% t-intervals over the runs.*", "",
              "## Per run", "", "| run | model | clean | " +
              " | ".join(f"{eps_label(e)} (from)" for e in eps) + " | failed checks |",
              "| --- | --- |" + " ---: |" * (len(eps) + 1) + " --- |"]  # fmt: skip
    for run, reps in runs.items():
        for n in models:
            r = reps[n]
            cells = [f"{r.worst(e)['srcc']:.3f} ({r.worst(e).get('from', '')})" for e in eps]
            lines.append(f"| {run} | {n} | {r.clean['srcc']:.3f} | " + " | ".join(cells) +
                         f" | {', '.join(r.failed) or '-'} |")  # fmt: skip
    if settings["dataset"] in LOADERS and LOADERS.info(settings["dataset"]).get("synthetic"):
        lines += ["", "The dataset is synthetic (MS-SSIM pseudo-MOS over distortions "
                  "of natural photographs), not human opinion scores, and small: these "
                  "numbers say how the models compare here, not what they do on KonIQ-10k "
                  "or LIVE."]  # fmt: skip
    write_text_atomic(out / "report.md", "\n".join(lines) + "\n")
    _plot_study(summary, models, eps, out / "worst_vs_eps.png")


def _study_certified_lines(summary: dict, models: Sequence[str], n_runs: int) -> list[str]:
    rows = [(n, c) for n in models for c in summary.get("certified", {}).get(n, [])]
    if not rows:
        return []
    alpha, images = rows[0][1]["alpha"], rows[0][1].get("images")
    joint = (f"probability {max(0.0, 1 - images * alpha):g} for all {images} intervals of a "
             "run at once" if images else "probability 1 - m alpha for the m intervals of a "
             "run at once")  # a summary written before "images" was kept
    lines = ["", "## Certified (median smoothing)", "",
             "The smoothed model scores an image by the median of the model's scores over n "
             "Gaussian noise draws of standard deviation sigma (cprl_fast/certify.py, "
             "docs/maths.md §8). Per image, the certified interval holds for every L2 "
             f"perturbation up to the radius with probability {1 - alpha:g}; certified SRCC: "
             "the lowest SRCC any scores inside the intervals can have (holding with "
             f"{joint}, by the union bound). Radius eps*sqrt(d) is the "
             "L2 ball holding the L-infinity ball of eps. These bounds are for the smoothed "
             "model, not the model the attacks above were run on. Cells: mean over the runs "
             f"[95% t-interval over the {n_runs} runs].", ""]  # fmt: skip
    cells = [[MODEL_PRESETS[n][0], f"{c['sigma']:g}", f"{r['radius']:.3f}", _holds(r),
              f"{c['n']}", _cell(c["smoothed_srcc"]), f"{r['width']['mean']:.3f}",
              _cell(r["certified_srcc"])]
             for n, c in rows for r in c["radii"]]  # fmt: skip
    return lines + certified_table("model", cells)


def _plot_study(summary: dict, models: Sequence[str], eps: Sequence[float], path: Path) -> None:
    keys = ["clean"] + [eps_key(e) for e in eps]
    x = [0.0] + [e * 255 for e in eps]
    curves = []
    for n in models:
        ms = [summary["models"][n][k] for k in keys]
        curves.append(Curve(MODEL_PRESETS[n][0], x, [m["mean"] for m in ms],
                            band=[m["ci"] for m in ms], style={"lw": 1.5}))  # fmt: skip
    plot_against_eps(curves, path, "Worst-case SRCC over the attack suite",
                     "budget eps (/255, L-infinity; 0 = clean)", "worst-case SRCC", zero=True,
                     legend_outside=False)  # fmt: skip
