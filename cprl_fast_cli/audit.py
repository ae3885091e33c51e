"""cprl-fast audit: a robustness audit of any quality model (the attack suite at several
budgets, the worst case, gradient-masking checks, optional certificates)."""

from __future__ import annotations

import argparse
from pathlib import Path

from cprl_fast_cli.catalog import load
from cprl_fast_cli.options import (
    UserError,
    add_attack,
    add_batch_and_device,
    add_certify,
    add_dataset,
    add_eps,
    add_out_dir,
    add_root,
    add_split,
    attack_list,
    certify_sigmas,
    check_split_images,
)


def add_parser(sub) -> argparse.ArgumentParser:
    listing = load()
    eps = listing["audit_eps"]
    p = sub.add_parser(
        "audit",
        help="robustness audit of any quality model: attack suite, worst case, masking checks",
        description="Attacks a model with a fixed suite at several budgets and writes "
        "report.md/json and srcc_vs_eps.png: SRCC per attack and eps with 95% bootstrap "
        "intervals, the worst case per eps, and gradient-masking diagnostics (docs in "
        "cprl_fast/audit.py). The model is a checkpoint of cprl-fast train, or any "
        "torch.nn.Module mapping images [N, 3, H, W] in [0, 1] to scores [N] in [0, 1] "
        "(higher is better), given as "
        "--module package.module:callable (a class or a function returning the module).",
    )
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--checkpoint", help="a checkpoint written by cprl-fast train")
    which.add_argument("--module", metavar="MODULE:CALLABLE",
                       help="import path of a callable returning the model")  # fmt: skip
    add_dataset(p, None, "dataset (default: the checkpoint's; builtin for --module)")
    add_root(p, "the checkpoint's run's")
    add_split(p, "audit")
    p.add_argument(
        "--image-size",
        type=int,
        help="crop side for --module models (default 224; a checkpoint is audited at its own, "
        "and refuses this option)",
    )
    add_eps(p, eps)
    add_attack(p, listing["suites"]["audit"])
    add_batch_and_device(p)
    p.add_argument("--transfer-from", metavar="CKPT",
                   help="another model's checkpoint: adds the transfer attack (images crafted on "
                   "it) and its check")  # fmt: skip
    p.add_argument(
        "--record",
        action="store_true",
        help="write the audit's summary into the checkpoint's model card",
    )
    add_certify(p)
    p.add_argument("--certify-layer", choices=listing["feature_layers"],
                   help="with --certify-feature: the layer whose features get the noise "
                   "(feature-space smoothing, FS-IQA; quality ResNets)")  # fmt: skip
    p.add_argument("--certify-feature", default="", metavar="SIGMA[,SIGMA...]",
                   help="feature-space smoothing at these noise levels (feature units) beside "
                   "--certify's input-space rows, with the time each takes")  # fmt: skip
    p.add_argument("--certify-lipschitz", choices=("power", "product"), default="power",
                   help="input-to-feature Lipschitz constant: power (per-image power-iteration "
                   "estimate, not a proof) or product (proven bound: plain ResNets with "
                   "imagenet input norm, no tiles; default: power)")  # fmt: skip
    add_out_dir(p, "reports/audit", "report.md, report.json, srcc_vs_eps.png")
    return p


def _load_module(text: str, device: str):
    import importlib

    from torch import nn

    from cprl_fast.checks import check_device

    module, sep, attr = text.partition(":")
    if not (sep and module and attr):
        raise UserError(f"--module must be package.module:callable, got {text!r}")
    try:
        fn = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as err:
        raise UserError(f"--module {text}: {err}") from None
    model = fn()
    if not isinstance(model, nn.Module):
        raise UserError(f"--module {text} returned {type(model).__name__}, not a torch.nn.Module")
    return model.to(check_device(device)).eval()


def run(args: argparse.Namespace) -> int:
    from cprl_fast.audit import audit
    from cprl_fast.data import load_splits
    from cprl_fast.evaluate import parse_eps
    from cprl_fast.train.runs import (
        check_card_split,
        check_held_out,
        load_run_splits,
        load_trained,
    )

    eps = [parse_eps(e) for e in args.eps.split(",") if e.strip()]
    if not eps:
        raise UserError("--eps needs at least one budget, e.g. 1/255,4/255")
    names = attack_list(args.attack, source=bool(args.transfer_from))
    sigmas = certify_sigmas(args.certify)
    feature = certify_sigmas(args.certify_feature, "--certify-feature")
    if feature and args.certify_layer is None:
        raise UserError("--certify-feature needs --certify-layer (where the noise goes)")
    if args.record and not args.checkpoint:
        raise UserError("--record writes into a checkpoint's model card: it needs --checkpoint")
    if args.checkpoint and args.image_size is not None:
        raise UserError("--image-size is for --module models: a checkpoint is audited at the "
                        "image size it was trained at (cprl-fast info shows it)")  # fmt: skip
    if args.checkpoint:
        trained = load_trained(args.checkpoint, args.device)
        model, title = trained.model, trained.name
        dataset = load_run_splits(trained.config, (args.split,), args.dataset, args.root,
                                  from_card=True)[args.split]  # fmt: skip
        if args.split != "all":
            check_card_split(trained, dataset)
        if dataset.name != trained.config.dataset:  # its own split is held out by making
            check_held_out(trained, dataset, args.split, args.root)
    else:
        model, title = _load_module(args.module, args.device), args.module
        size = 224 if args.image_size is None else args.image_size
        dataset = load_splits(args.dataset or "builtin", args.root, (args.split,),
                              image_size=size)[args.split]  # fmt: skip
    check_split_images(dataset, args.split)
    source = None
    if args.transfer_from:
        if not Path(args.transfer_from).exists():
            raise UserError(f"--transfer-from: checkpoint not found: {args.transfer_from}")
        source = load_trained(args.transfer_from, args.device).model
    report = audit(model, dataset, eps, names, args.batch_size, args.device,
                   out_dir=args.out_dir, title=title, source=source, certify_sigmas=sigmas,
                   certify_n=args.certify_n, certify_layer=args.certify_layer,
                   certify_feature_sigmas=feature,
                   certify_lipschitz=args.certify_lipschitz)  # fmt: skip
    print((args.out_dir / "report.md").read_text())
    failed = report.failed
    listed = ": " + ", ".join(failed) if failed else ""
    print(f"wrote {args.out_dir}/report.md, report.json, srcc_vs_eps.png; "
          f"{len(failed)} diagnostic(s) failed{listed}")  # fmt: skip
    if args.record:
        from cprl_fast.audit import record

        record(args.checkpoint, report, dataset, audited=model)
        print(f"recorded the audit summary in {args.checkpoint} (cprl-fast info shows it)")
    return 0
