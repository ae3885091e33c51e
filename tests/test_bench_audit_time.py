"""bench/audit_time.py, which times the audit against its floor on a GPU (gpu_check.sh's audit
step; tests/test_gpu_check.py runs it end to end on the CPU): the passes it counts, and options
refused with a one-line error before any work."""

from __future__ import annotations

import pytest

from bench.audit_time import main, suite_passes
from cprl_fast.attacks import ATTACKS


def test_the_surrogate_attack_counts_as_ten_more_steps_per_eps():
    plain = suite_passes(("fgsm", "pgd", "square"), 4)
    with_ca = suite_passes(("fgsm", "pgd", "square", "pgd-soft"), 4)
    assert ATTACKS.info("pgd-soft")["settings"]["steps"] == 10
    assert with_ca == {"fb": plain["fb"] + 4 * 10, "f": plain["f"]}


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--images", "20"], "--images must be a multiple of --batch-size (16)"),
        (["--images", "0"], "--images must be 1 to 250, got 0"),
        (["--images", "251"], "--images must be 1 to 250, got 251"),
        (["--device", "tpu"], "--device must be cpu or cuda, got 'tpu'"),
    ],
)
def test_bad_options_are_refused_in_one_line(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--device", "cpu", *argv])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert message in err[-1]
