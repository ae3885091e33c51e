"""Options that several commands take, each defined once, with choices and help from the
static listing of the registries (:mod:`cprl_fast_cli.catalog`); and the parsing of the values
they share (comma-separated attacks, budgets and noise levels). Nothing here imports torch."""

from __future__ import annotations

import argparse
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from cprl_fast_cli.catalog import load

if TYPE_CHECKING:  # (not imported at run time: the CLI answers help without torch)
    from cprl_fast.train import TrainConfig


class UserError(Exception):
    """A mistake in what the user asked for: one line on stderr, exit status 2."""


#: Help of the run settings (TrainConfig's fields that are not model or objective options).
RUN_HELP = {
    "dataset": "dataset name",
    "root": "folder the dataset was unpacked to (builtin: its cache folder)",
    "split_file": "JSON split file to reuse (written there if missing)",
    "split_seed": "seed of the 4:1 scene-disjoint split",
    "val_ratio": "share of the training scenes held out (scene-disjoint) to choose best.pt; the "
    "test split is used only to report",
    "folds": "K-fold cross-validation by scene instead of the 4:1 split (every image is a test "
    "image in one of the K runs)",
    "fold": "which of the folds is the test side (0 .. folds-1)",
    "model": "quality model",
    "objective": "training objective (default: the model's own)",
    "lr": "learning rate of every AdamW optimiser",
    "weight_decay": "AdamW weight decay",
    "batch_size": "images per iteration",
    "epochs": "passes over the training split",
    "image_size": "side of the square training and test crops, pixels",
    "clip_grad": "clip each parameter group's gradient norm to this (default: no clipping)",
    "bf16": "bf16 autocast (CUDA only)",
    "seed": "seed of initialisation, data order and augmentation",
    "num_workers": "DataLoader worker processes for the training images (and as many again "
    "drawing the ranking batches of rank_weight)",
    "sync_bn": "SyncBatchNorm under DDP (CUDA only)",
    "freeze_bn": "BatchNorm uses its running statistics while training",
    "device": "cpu, cuda or cuda:N",
    "out_dir": "folder for log.csv, last.pt and best.pt",
    "max_steps": "stop after this many iterations in all (default: epochs x batches)",
    "noise_sigma": "train on images plus Gaussian noise of this standard deviation (pixel "
    "units; for cprl-fast audit --certify; default: 0, off)",
    "train_crop": "train on random crops of this side, pixels, of the image-size images "
    "(native-resolution crops; pair with the model's --patch)",
    "hflip": "random horizontal flips of the training crops",
    "schedule": "learning rate: constant, or onecycle (warm-up over the first tenth, then "
    "cosine down)",
    "rank_weight": "weight of a ranking hinge added to every step: crops of pristine photographs "
    "at 5 distortion strengths, ordered (RankIQA; needs --train-crop; default: 0, off)",
    "rank_references": "pristine photographs of --rank-weight's crops, a folder or file "
    "(default: the training scenes' references of a dataset cprl-fast synthesize wrote)",
}
#: Help of model and objective options that several entries share.
OPTION_HELP = {
    "arch": "ResNet depth: resnet18, resnet34, resnet50 or resnet101",
    "pretrained": "backbone initialisation: imagenet (torchvision's weights, from torch's "
    "cache or downloaded) or a local state-dict file",
    "placement": "CA placement: last (last block of each stage), all, or comma-separated blocks",
    "b": "initial offset b of every CA module (0.5 keeps every channel)",
    "temperature": "temperature T of the CA mask's sigmoid",
    "rank": "hard (the paper) or soft rank in the CA modules",
    "tau": "soft-rank temperature, in units of the channel means",
    "units": "LWTA group size",
    "bins": "NIMA score bins",
    "scnn_steps": "DBCNN: S-CNN pre-training steps on the built-in distortions",
    "input_norm": "input normalisation: imagenet, or lcn (local contrast normalisation first)",
    "patch": "score an image as the mean over its tiles of this side, pixels (default: whole)",
    "lam": "weight lambda of the intervention losses",
    "mode": "faithful (Algorithm 1's alternating order) or fast (one backward per iteration)",
    "sigma": "std of NIMA's target distribution around the label, on [0, 1]",
    "eps": "L-infinity budget of the training attack, pixel units (e.g. 0.0039 = 1/255)",
    "steps": "PGD steps per training batch",
    "weight": "weight of the input-gradient penalty",
}


def parse_bool(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


#: The listing's type names -> what argparse converts a value with.
CONVERTERS = {"bool": parse_bool, "int": int, "float": float, "str": str}


def with_default(text: str, default: object) -> str:
    return text if "default:" in text else f"{text} (default: {default})"


def entries_help(entries: dict[str, str]) -> str:
    """``name: about; ...`` of a registry's entries, as the listing holds them."""
    return "; ".join(f"{n}: {about}".rstrip(": ") for n, about in entries.items())


def add_dataset(p: argparse.ArgumentParser, default: str | None, help: str) -> None:
    p.add_argument("--dataset", default=default, choices=load()["datasets"], help=help)


def add_root(p: argparse.ArgumentParser, default: str = "") -> None:
    """--root; ``default`` says where it comes from when it is not given."""
    p.add_argument("--root", help=RUN_HELP["root"] + (f" (default: {default})" if default else ""))


def add_split(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--split", default="test", choices=load()["splits"],
                   help=f"which split to {what} on (default: test)")  # fmt: skip


def check_split_images(dataset, split: str) -> None:
    """``UserError`` where ``dataset``, the ``--split`` side a command scores, holds fewer than
    2 images (SRCC ranks them): a run trained with ``val_ratio`` 0 (``--recipe native``) has no
    val side."""
    if len(dataset) < 2:
        raise UserError(f"--split {split} of {dataset.name} holds {len(dataset)} image(s): SRCC "
                        "needs at least 2 (a run trained with val_ratio 0, as --recipe native, "
                        "has no val side); choose another --split")  # fmt: skip


def add_attack(p: argparse.ArgumentParser, default: Iterable[str]) -> None:
    """--attack, comma-separated names of the attack registry."""
    default = ",".join(default)
    p.add_argument("--attack", default=default,
                   help=f"comma-separated attacks: {entries_help(load()['attacks'])} "
                   f"(default: {default})")  # fmt: skip


def attack_list(text: str, source: bool = False) -> list[str]:
    """The names of --attack, checked against the attack registry (imports cprl_fast) before
    any work; ``source``: whether the command gives the attacks a source model (an attack that
    crafts its images on one, ``transfer``, is refused without)."""
    from cprl_fast.attacks import check_attack_names, needs_source

    names = check_attack_names(a.strip() for a in text.split(",") if a.strip())
    missing = [] if source else needs_source(names)
    if missing:
        raise UserError(f"--attack {missing[0]} crafts its images on another model, which this "
                        "command has none of: use cprl-fast audit --transfer-from CKPT, or "
                        "cprl-fast study (each model's source is another of its "
                        "models)")  # fmt: skip
    return names


def add_device(p: argparse.ArgumentParser, what: str = "") -> None:
    """--device; ``what`` says what runs there when it is not the command's whole work."""
    p.add_argument("--device", default="cpu",
                   help=f"{RUN_HELP['device']}{what} (default: cpu)")  # fmt: skip


def positive_int(text: str) -> int:
    """argparse type of a count (``--batch-size``, ``--certify-n``, ``--workers``): an integer
    >= 1, else argparse's one line naming the option."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text!r}")
    return value


def add_batch_and_device(p: argparse.ArgumentParser, batch: int | None = 16,
                         what: str = "") -> None:  # fmt: skip
    """--batch-size and --device (evaluate, audit, score, and the protocols' training);
    ``batch`` None: the default comes from elsewhere, ``what`` says from where."""
    p.add_argument("--batch-size", type=positive_int, default=batch,
                   help=f"images per batch (default: {what or batch})")  # fmt: skip
    add_device(p)


def add_recipe(p: argparse.ArgumentParser, default: str) -> None:
    """--recipe, a name of cprl_fast.presets.RECIPES: settings that the flags override."""
    recipes = {name: entry["about"] for name, entry in load()["recipes"].items()}
    p.add_argument("--recipe", default=default, choices=list(recipes),
                   help=f"training recipe, whose settings the flags override: "
                   f"{entries_help(recipes)} (default: {default})")  # fmt: skip


def add_overwrite(p: argparse.ArgumentParser, what: str) -> None:
    """--overwrite: replace ``what`` (an existing output), which is otherwise refused."""
    p.add_argument("--overwrite", action="store_true", help=f"replace {what}")


def add_eps(p: argparse.ArgumentParser, default: str) -> None:
    """--eps: one budget, or several comma-separated (as the default shows), in pixel units."""
    what = "budget" if "," not in default else "comma-separated budgets"
    p.add_argument("--eps", default=default,
                   help=f"attack {what} (L-infinity, pixel units), e.g. 1/255 "
                   f"(default: {default})")  # fmt: skip


def add_out_dir(p: argparse.ArgumentParser, default: str, what: str) -> None:
    """--out-dir, the folder a command writes ``what`` into."""
    p.add_argument("--out-dir", type=Path, default=Path(default),
                   help=f"folder for {what} (default: {default})")  # fmt: skip


#: The protocol commands' training flags whose default is the recipe's setting where it has
#: one, else the command's own (``epochs``: the command's own for the recipe).
PROTOCOL_FLAGS = ("image_size", "epochs", "lr", "batch_size")


def add_protocol(p: argparse.ArgumentParser, out: str, arch: str, size: int,
                 epochs: dict[str, int], lr: float, eps: str = "1/255",
                 dataset: str = "builtin", recipe: str = "resized") -> None:  # fmt: skip
    """The options `reproduce`, `demo` and `study` share, with each command's defaults: the
    recipe's settings replace ``size``, ``lr`` and the batch size of 16 where it has them;
    ``epochs`` is the command's length per recipe (a recipe's steps per epoch differ)."""
    add_dataset(p, dataset, f"dataset (default: {dataset})")
    add_root(p)
    add_out_dir(p, out, "the report, resumable")
    add_eps(p, eps)
    add_recipe(p, recipe)
    own = {"image_size": size, "lr": lr, "batch_size": 16}
    p.set_defaults(protocol_defaults=own, protocol_epochs=epochs)

    def default(name: str) -> str:
        return f"the recipe's where it sets one, else {own[name]:g}"

    p.add_argument("--arch", default=arch, help=f"{OPTION_HELP['arch']} (default: {arch})")
    p.add_argument("--image-size", type=int, default=None,
                   help=f"{RUN_HELP['image_size']} (default: {default('image_size')})")
    per_recipe = ", ".join(f"{n} with {r}" for r, n in epochs.items())
    p.add_argument("--epochs", type=int, default=None,
                   help=f"{RUN_HELP['epochs']} (default: {per_recipe})")  # fmt: skip
    p.add_argument("--lr", type=float, default=None,
                   help=f"{RUN_HELP['lr']} (default: {default('lr')})")  # fmt: skip
    p.add_argument("--max-steps", type=int, help=RUN_HELP["max_steps"])
    add_batch_and_device(p, None, default("batch_size"))


def protocol_config(args: argparse.Namespace) -> TrainConfig:
    """The TrainConfig that `reproduce`, `demo` and `study` start each model's run from: the
    command's defaults, overridden by the recipe's settings, overridden by the flags given."""
    from cprl_fast.presets import recipe_settings
    from cprl_fast.train import TrainConfig

    settings = {**args.protocol_defaults, "epochs": args.protocol_epochs[args.recipe],
                **recipe_settings(args.recipe)}
    settings.update({k: getattr(args, k) for k in PROTOCOL_FLAGS if getattr(args, k) is not None})
    settings["model_options"] = {**settings.get("model_options", {}), "arch": args.arch}
    return TrainConfig(**settings, max_steps=args.max_steps, device=args.device)


def add_certify(p: argparse.ArgumentParser) -> None:
    """--certify and --certify-n, as audit and study take them."""
    p.add_argument("--certify", default="", metavar="SIGMA[,SIGMA...]",
                   help="also certify by median smoothing at these noise levels (pixel units, "
                   "e.g. 0.12,0.25): smoothed SRCC, interval widths, certified SRCC")  # fmt: skip
    p.add_argument("--certify-n", type=positive_int, default=1000,
                   help="noise draws per image for --certify (default: 1000)")  # fmt: skip


def certify_sigmas(text: str, option: str = "--certify") -> list[float]:
    """The noise levels of ``--certify`` (pixel units: each in (0, 1]) or ``--certify-feature``
    (feature units: each > 0), comma-separated numbers or fractions."""
    from cprl_fast.checks import check_noise_sigma
    from cprl_fast.evaluate import parse_number

    try:
        sigmas = [parse_number(v, option) for v in text.split(",") if v.strip()]
        for v in sigmas:
            check_noise_sigma(v, option, pixel_units=option == "--certify")
    except ValueError as err:
        raise UserError(f"{err} (noise levels such as 0.12,0.25)") from None
    if len(set(sigmas)) != len(sigmas):  # a study's table keys its rows by level
        raise UserError(f"{option} must give each noise level once, got {text!r}")
    return sigmas


def parse_named_path(text: str) -> tuple[str | None, Path]:
    """``"name=path"`` -> ``(name, path)``; a plain ``"path"`` -> ``(None, path)``."""
    name, sep, path = str(text).partition("=")
    if sep and name and "/" not in name:
        if not path:
            raise UserError(f"--checkpoint {text}: no path after '=' (NAME=PATH)")
        return name, Path(path)
    return None, Path(text)
