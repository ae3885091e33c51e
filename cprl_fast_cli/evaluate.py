"""cprl-fast evaluate: clean and attacked SRCC/PLCC/MSE of trained models (Tables 1, 2, 4;
Figs 4-6)."""

from __future__ import annotations

import argparse

from cprl_fast_cli.catalog import load
from cprl_fast_cli.options import (
    UserError,
    add_attack,
    add_batch_and_device,
    add_dataset,
    add_eps,
    add_out_dir,
    add_root,
    add_split,
    attack_list,
    check_split_images,
    parse_named_path,
)


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "evaluate",
        help="clean and attacked SRCC/PLCC/MSE of trained models (Tables 1, 2, 4; Figs 4-6)",
        description="Evaluates checkpoints clean and under attacks; writes results.md/.csv/.json "
        "(and with --figures fig4_landscape.png, fig5_channels.png, fig6_srcc_vs_eps.png).",
    )
    p.add_argument("--checkpoint", action="append", required=True, metavar="[NAME=]PATH",
                   help="a checkpoint written by cprl-fast train, named NAME in the tables "
                   "(default: its run folder's name); repeat to compare models")  # fmt: skip
    add_dataset(p, None, "dataset (default: the one the first model was trained on)")
    add_root(p, "the first model's training run's")
    add_split(p, "evaluate")
    add_attack(p, load()["suites"]["protocol"])
    add_eps(p, "1/255")
    add_batch_and_device(p)
    p.add_argument("--figures", action="store_true", help="also draw Figs 4, 5 and 6")
    add_out_dir(p, "reports/evaluate", "the tables and figures")
    return p


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from cprl_fast.data import decoded_once
    from cprl_fast.evaluate import (
        bar_progress,
        evaluate,
        evaluate_passes,
        parse_eps,
        passes_to_score,
    )
    from cprl_fast.figures import draw_figures
    from cprl_fast.render import write_results
    from cprl_fast.train.runs import check_held_out, load_run_splits, load_trained

    eps = parse_eps(args.eps)
    names = attack_list(args.attack)
    models = {}
    for text in args.checkpoint:
        name, path = parse_named_path(text)
        trained = load_trained(path, args.device, name)
        if trained.name in models:
            raise UserError(f"two checkpoints are named {trained.name!r}: name them, e.g. "
                            f"--checkpoint other={path}")  # fmt: skip
        models[trained.name] = trained
    first = next(iter(models.values()))
    cfg0 = first.config
    for t in models.values():  # every model is scored on the first one's crops
        if t.config.image_size != cfg0.image_size:
            raise UserError(
                f"checkpoint {t.path} ({t.name}) was trained at image_size "
                f"{t.config.image_size}, {first.name} at {cfg0.image_size}: evaluate scores every "
                "model on the same crops; evaluate models of one image size together"
            )
    dataset = load_run_splits(cfg0, (args.split,), args.dataset, args.root,
                              from_card=True)[args.split]  # fmt: skip
    check_split_images(dataset, args.split)
    for t in models.values():
        check_held_out(t, dataset, args.split, args.root or cfg0.root)
    images = decoded_once(dataset)  # decoded once for every checkpoint and figure
    planned = evaluate_passes(names, eps)
    passes = sum(passes_to_score(t.model, images, planned, args.batch_size, args.device)
                 for t in models.values())  # fmt: skip
    results = {}
    memo = {}  # the clean and attacked scores the table and Fig. 6 share
    with tqdm(total=passes * len(images), desc="evaluate", unit="img") as bar:
        for name, t in models.items():
            results[name] = evaluate(t.model, images, names, eps, args.batch_size, args.device,
                                     memo=memo, progress=bar_progress(bar, f"evaluate {name}"))
    paths = write_results(results, args.out_dir, f"{dataset.name} {args.split}, eps = {args.eps}")
    if args.figures:
        plain = {n: t.model for n, t in models.items()}
        draw_figures(plain, images, args.out_dir, args.batch_size, args.device, memo)
    print((args.out_dir / "results.md").read_text())
    print(f"wrote {', '.join(str(p) for p in paths.values())}")
    return 0
