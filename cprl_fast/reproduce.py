"""The paper's protocol for one dataset, into one report folder, resumable.

Trains (or resumes) every model, attacks them and writes every table and figure:
- ``resnet``: the plain ResNet; ``cprl``: CA + the PNS game (b = 0.4); the baselines (``lwta``,
  ``denoise``, ``sat``, ``nt``, ``nima``, ``dbcnn``); their clean and attacked SRCC/PLCC/MSE
  (Tables 1, 2 and 4 on this dataset) at ``eps``;
- Table 5: CPRL with b in ``b_values``; Table 6: CA alone (no PNS) against CA + PNS;
- Figs 4, 5, 6 for ResNet against CPRL.
Each model trains into ``out/models/<name>`` (``last.pt`` resumes it; once the model is trained
and a ``best.pt`` was chosen on a validation split, ``last.pt`` is removed, and ``best.pt`` stays
beside the run's logs and ``curves.png``); each finished step writes its JSON under
``out/steps/`` and is skipped when run again: a finished model only if its card's settings are
this run's (:func:`cprl_fast.train.trainer.check_same_run`, else an error naming the first
that differs), an evaluation (and Fig. 6's attacks) only for the same attacks, eps, batch and
model weights (:func:`cprl_fast.train.checkpoint.weights_digest`); Figs 4 and 5 are drawn
again. ``report.md`` and ``report.json`` collect everything.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from pathlib import Path

import torch

from cprl_fast.attacks import SUITES
from cprl_fast.data import LOADERS, decoded_once
from cprl_fast.evaluate import (
    PredictionMemo,
    bar_progress,
    check_attacks,
    evaluate,
    evaluate_passes,
    passes_to_score,
)
from cprl_fast.figures import (
    FIG6_ATTACK,
    FIG6_EPS,
    check_fig6_data,
    draw_figures,
    figure_markdown,
)
from cprl_fast.installation import machine
from cprl_fast.io import read_json, write_json_atomic, write_text_atomic
from cprl_fast.presets import MODEL_PRESETS
from cprl_fast.render import write_results
from cprl_fast.reports import eps_label
from cprl_fast.train import TrainConfig, Trainer
from cprl_fast.train.checkpoint import load, weights_digest
from cprl_fast.train.runs import card_train_config, load_run_splits
from cprl_fast.train.trainer import check_same_run

#: The baselines trained beside ResNet and CPRL by default.
BASELINES = ("lwta", "denoise", "sat", "nt", "nima", "dbcnn")


def train_model(name: str, cfg: TrainConfig, train_set, val_set, out: Path) -> torch.nn.Module:
    """The model trained on ``train_set``, as chosen on ``val_set`` (best.pt; last.pt where no
    validation split exists). A run whose models folder was removed (it is not meant for version
    control) is trained again, from its seed."""
    run = dataclasses.replace(cfg, out_dir=str(out / "models" / name))
    trainer = Trainer(run, train_set, val_set)
    done = _step_file(out, f"train-{name}")
    folder = Path(run.out_dir)
    kept = any((folder / n).is_file() for n in ("best.pt", "last.pt"))
    state = None  # the chosen checkpoint, read once
    if done.is_file() and kept:  # reused as it is: it must be the model this run asks for
        finished = folder / "best.pt" if (folder / "best.pt").is_file() else folder / "last.pt"
        state = load(finished)
        try:
            check_same_run(card_train_config(state, finished), run, finished, length=True)
        except ValueError as err:
            raise ValueError(f"{out} holds a finished {name} model of other settings: {err}; "
                             f"use another out_dir, or remove {folder} to train it "
                             "again") from None  # fmt: skip
    else:
        resume = (Path(run.out_dir) / "last.pt").is_file()
        # no last.pt: an earlier attempt stopped before its first checkpoint; start it over
        start = time.perf_counter()
        result = trainer.fit(resume=resume, overwrite=not resume)
        # wall seconds of this process's part (the whole training unless it resumed), and the
        # machine they were taken on
        write_json_atomic(done, {"model": name, "val": result, "steps": trainer.step,
                                 "seconds": round(time.perf_counter() - start, 1),
                                 "resumed": resume, "machine": machine(run.device)})  # fmt: skip
    if (folder / "best.pt").is_file():
        # only resuming reads last.pt (the optimisers: 2/3 of its size); this one is finished
        (folder / "last.pt").unlink(missing_ok=True)
    if state is None:
        chosen = folder / "best.pt" if (folder / "best.pt").is_file() else folder / "last.pt"
        state = load(chosen)
    trainer.model.load_state_dict(state["model"])
    return trainer.model.eval()


def _digest(settings: dict) -> str:
    """The name of a step's settings (12 hex digits of their JSON's SHA-256)."""
    return hashlib.sha256(json.dumps(settings).encode()).hexdigest()[:12]


def _step_file(out: Path, step: str) -> Path:
    """Where the finished step ``step`` keeps what it computed."""
    return out / "steps" / f"{step}.json"


def _finished(out: Path, step: str) -> object | None:
    """What the finished step ``step`` wrote, or None where it has not run."""
    path = _step_file(out, step)
    return read_json(path, "finished step") if path.is_file() else None


def _cached(out: Path, step: str, fn):
    value = _finished(out, step)
    if value is None:
        value = fn()
        write_json_atomic(_step_file(out, step), value)
    return value


def reproduce(
    dataset: str, root: str | None, out_dir: str | Path, base: TrainConfig,
    eps: float = 1 / 255, attack_names=SUITES["protocol"],
    b_values=(0.2, 0.3, 0.4, 0.5), ablations: bool = True, baselines=BASELINES,
) -> dict:  # fmt: skip
    """Runs (or resumes) the protocol; returns the report's content."""
    check_attacks(attack_names, None)  # before any model trains: the protocol has no source
    out = Path(out_dir)
    split_file = base.split_file or str(out / "split.json")
    cfg = dataclasses.replace(base, dataset=dataset, root=root, split_file=split_file)
    splits = load_run_splits(cfg, ("train", "val", "test"))
    train_set, val_set, test_set = splits["train"], splits["val"], splits["test"]
    test_images = decoded_once(test_set)  # decoded once for every model, table and figure
    bs, dev = cfg.batch_size, cfg.device
    memo: PredictionMemo = {}  # the clean and attacked scores a table and a figure share

    def train(name: str, model: str, objective: str | None = None, **model_options):
        changes = {"model": model, "objective": objective,
                   "model_options": {**cfg.model_options, **model_options}}  # fmt: skip
        return train_model(name, dataclasses.replace(cfg, **changes), train_set, val_set, out)

    def attacked(name: str, model: torch.nn.Module, names) -> dict:
        # the cache key holds every setting that changes the result, and the model's weights
        # (a model trained again, with other settings or on another machine, is evaluated again)
        digest = _digest({"eps": eps, "attacks": list(names), "batch_size": bs, "seed": 0,
                          "weights": weights_digest(model)})  # fmt: skip

        def scored() -> dict:  # with a bar over the images of the passes the memo lacks
            from tqdm import tqdm

            passes = passes_to_score(model, test_images, evaluate_passes(names, eps), bs, dev,
                                     memo=memo)  # fmt: skip
            what = f"evaluate {name}"
            with tqdm(total=passes * len(test_images), desc=what, unit="img") as bar:
                return evaluate(model, test_images, names, eps, bs, dev, memo=memo,
                                progress=bar_progress(bar, what))  # fmt: skip

        return _cached(out, f"eval-{name}-{digest}", scored)

    models = {"resnet": train("resnet", model="resnet"), "cprl": train("cprl", model="cprl", b=0.4)}
    others = {name: train(name, model=name) for name in baselines}
    main = {n: attacked(n, m, attack_names) for n, m in {**models, **others}.items()}
    write_results(
        main, out / "tables" / "main", f"{dataset}: clean and attacked, eps = {eps_label(eps)}"
    )

    table5, table6 = {}, {}
    for b in b_values if ablations else ():
        name = f"cprl-b{b:g}"
        model = models["cprl"] if b == 0.4 else train(name, model="cprl", b=b)
        table5[f"b={b:g}"] = attacked(name, model, SUITES["b-sweep"])
    if ablations:
        write_results(table5, out / "tables" / "table5_b", "Table 5: the offset b")
        ca_alone = train("ca", **MODEL_PRESETS["ca"][1])
        table6 = {
            "CA alone": attacked("ca", ca_alone, SUITES["ablation"]),
            "CA + PNS": main["cprl"],
        }
        write_results(table6, out / "tables" / "table6_pns", "Table 6: CA alone against CA + PNS")

    names = {"ResNet": models["resnet"], "CPRL": models["cprl"]}
    # Fig. 6's attacks (most of the figures' work) are a step like the evaluations
    weights = {n: weights_digest(m) for n, m in names.items()}
    step = "fig6-" + _digest({"attack": FIG6_ATTACK, "eps": list(FIG6_EPS), "batch_size": bs,
                              "seed": 0, "weights": weights})  # fmt: skip
    known = _finished(out, step)
    if known is not None:
        try:
            check_fig6_data(known, list(names))
        except ValueError as err:
            raise ValueError(f"finished step {_step_file(out, step)}: {err}; remove it to "
                             "attack again") from None  # fmt: skip
    fig6 = draw_figures(names, test_images, out / "figures", bs, dev, memo, fig6=known)
    if known is None:
        write_json_atomic(_step_file(out, step), fig6)
    report = {
        "dataset": dataset,
        "eps": eps,
        "config": dataclasses.asdict(cfg),
        "split": test_set.split_info,
        "main": main,
        "table5": table5,
        "table6": table6,
        "fig6": fig6,
    }
    write_json_atomic(out / "report.json", report)
    arch = cfg.model_options.get("arch", "the default backbone")
    parts = [f"# CPRL protocol on `{dataset}`", "",
             f"Train {len(train_set)} / val {len(val_set)} "
             + ("(chooses each model's checkpoint) / " if len(val_set) else
                "(no validation split: each model's last checkpoint) / ")
             + f"test {len(test_set)} images, scene-disjoint, split {split_file}; "
             f"{arch} at {cfg.image_size} px, {cfg.epochs} epoch(s)"
             + (f" (at most {cfg.max_steps} steps)" if cfg.max_steps is not None else "")
             + f", batch {cfg.batch_size}.",
             ""]  # fmt: skip
    for sub in ("main", "table5_b", "table6_pns") if ablations else ("main",):
        parts += [(out / "tables" / sub / "results.md").read_text(), ""]
    parts += ["## Figures", ""]
    parts += figure_markdown()
    curves = sorted((out / "models").glob("*/curves.png"))
    if curves:  # each model's own run folder (not meant for version control)
        parts += ["Training curves (losses per iteration, validation SRCC and PLCC per epoch): "
                  + ", ".join(f"[{c.parent.name}](models/{c.parent.name}/curves.png)"
                              for c in curves), ""]  # fmt: skip
    if LOADERS.info(dataset).get("synthetic"):
        parts += ["", "The built-in dataset is synthetic (MS-SSIM pseudo-MOS), not human opinion "
                  "scores: these numbers do not reproduce the paper's tables."]  # fmt: skip
    write_text_atomic(out / "report.md", "\n".join(parts) + "\n")
    return report
