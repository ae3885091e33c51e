"""The command line's front end (``cprl_fast_cli``): its static listing of the registries is
what the registries hold, and ``--help``, every command's ``--help`` and argument errors never
import torch or cprl_fast (so they answer at once; ``bench/cli_latency.py`` times them)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from cprl_fast_cli import COMMANDS, catalog, make_catalog


def test_the_committed_listing_is_what_the_registries_hold():
    now = make_catalog.build()
    assert json.loads(make_catalog.text(now)) == catalog.load(), (
        "cprl_fast_cli/catalog.json is stale: run python -m cprl_fast_cli.make_catalog --write"
    )


def test_the_listing_check_fails_on_a_stale_file(tmp_path, monkeypatch, capsys):
    stale = tmp_path / "catalog.json"
    listing = make_catalog.build()
    listing["models"].pop(next(iter(listing["models"])))
    stale.write_text(make_catalog.text(listing))
    monkeypatch.setattr(make_catalog, "PATH", stale)
    assert make_catalog.main([]) == 1 and "differs from" in capsys.readouterr().out
    assert make_catalog.main(["--write"]) == 0
    assert make_catalog.main([]) == 0 and stale.read_text() == make_catalog.text(
        make_catalog.build()
    )


def test_every_suite_names_registered_attacks_and_the_boxes_partition_them():
    from cprl_fast.attacks import ATTACKS, SUITES, black_box_checks, white_box

    for name, names in SUITES.items():
        assert names and all(n in ATTACKS for n in names), name
    assert set(white_box()) | set(black_box_checks()) == set(ATTACKS)
    assert not set(white_box()) & set(black_box_checks())


ANSWERED_WITHOUT_TORCH = [
    ["--help"],
    *[[c, "--help"] for c in COMMANDS],
    ["--version"],
    ["train", "--epochz", "3"],
    ["bogus"],
    ["score"],
    ["audit", "--module", "m:f", "--certify-n", "2.5"],
    ["train", "--dataset", "nosuch"],
]


def test_help_and_argument_errors_import_neither_torch_nor_cprl_fast():
    code = (
        "import sys, json\n"
        "from cprl_fast_cli import main\n"
        "out = []\n"
        f"for argv in {ANSWERED_WITHOUT_TORCH!r}:\n"
        "    try:\n"
        "        main(argv)\n"
        "    except SystemExit as done:\n"
        "        out.append(done.code)\n"
        "heavy = sorted(m for m in ('torch', 'cprl_fast', 'numpy') if m in sys.modules)\n"
        "print(json.dumps({'codes': out, 'heavy': heavy}), file=sys.stderr)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    result = json.loads(r.stderr.strip().splitlines()[-1])
    assert result["heavy"] == [], result
    helps = len(COMMANDS) + 2  # and --version
    assert result["codes"] == [0] * helps + [2] * (len(ANSWERED_WITHOUT_TORCH) - helps)


@pytest.mark.parametrize("command", COMMANDS)
def test_each_command_module_has_a_parser_and_a_run(command):
    from cprl_fast_cli import command as module_of

    module = module_of(command)
    assert callable(module.add_parser) and callable(module.run)
    assert module.__doc__ and f"cprl-fast {command}" in module.__doc__


#: Options several commands take: each is defined once (in cprl_fast_cli/options.py).
SHARED = ("--dataset", "--root", "--split", "--attack", "--eps", "--out-dir", "--batch-size",
          "--device", "--overwrite", "--certify", "--certify-n")  # fmt: skip


def test_each_shared_option_is_defined_once():
    from pathlib import Path

    import cprl_fast_cli

    folder = Path(cprl_fast_cli.__file__).parent
    texts = {p.name: p.read_text() for p in folder.glob("*.py")}
    for flag in SHARED:
        where = [name for name, text in texts.items() if f'"{flag}"' in text]
        assert where == ["options.py"], (flag, where)


def test_a_recipe_sets_what_the_flags_leave_and_the_flags_win():
    from cprl_fast_cli import parser
    from cprl_fast_cli.options import protocol_config

    plain = protocol_config(parser().parse_args(["study", "--recipe", "resized"]))
    assert (plain.image_size, plain.lr, plain.batch_size, plain.train_crop) == (64, 3e-4, 16, None)
    assert plain.epochs == 10 and plain.schedule == "constant"
    native = protocol_config(parser().parse_args(["study"]))  # the study's default recipe
    assert (native.image_size, native.lr, native.batch_size, native.train_crop) == (256, 1e-3, 32,
                                                                                   64)  # fmt: skip
    assert native.model_options == {"input_norm": "lcn", "patch": 64, "arch": "resnet18"}
    assert native.epochs == 50 and native.schedule == "onecycle" and native.hflip
    assert protocol_config(parser().parse_args(["demo"])).epochs == 100
    assert protocol_config(parser().parse_args(["reproduce"])).train_crop is None
    mine = protocol_config(parser().parse_args(["demo", "--recipe", "native", "--lr", "2e-3",
                                                "--batch-size", "8", "--arch", "resnet34"]))
    assert (mine.lr, mine.batch_size, mine.model_options["arch"]) == (2e-3, 8, "resnet34")


def test_each_protocol_command_has_a_length_for_every_recipe():
    from cprl_fast_cli import parser

    for command in ("reproduce", "demo", "study"):
        args = parser().parse_args([command])
        assert set(args.protocol_epochs) == set(catalog.load()["recipes"]), command


def test_train_takes_a_recipe_and_its_flags_override_it(tmp_path, monkeypatch):
    from cprl_fast.train import runs
    from cprl_fast_cli import main

    seen = {}
    monkeypatch.setattr(runs, "train_and_test", lambda cfg, **_: seen.setdefault("cfg", cfg) and {})
    assert main(["train", "--recipe", "native", "--model", "resnet", "--patch", "32",
                 "--train-crop", "32", "--out-dir", str(tmp_path)]) == 0  # fmt: skip
    cfg = seen["cfg"]
    assert cfg.model_options == {"input_norm": "lcn", "patch": 32}
    assert (cfg.train_crop, cfg.image_size, cfg.schedule, cfg.hflip) == (32, 256, "onecycle", True)
    with pytest.raises(SystemExit) as stop:
        main(["train", "--recipe", "crops"])
    assert stop.value.code == 2
