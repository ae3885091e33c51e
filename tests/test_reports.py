"""The typed reports and their labels: one interval format, one budget label, and report.json
read back into the same report (the committed studies' audits included)."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest

from cprl_fast.render import audit_machines
from cprl_fast.reports import AuditReport, Check, eps_key, eps_label, interval, worst_of

COMMITTED = Path(__file__).resolve().parents[1] / "results" / "robustness-builtin-v2"


def test_interval_formats():
    assert interval(0.51234, (0.4, 0.6)) == "0.512 [0.400, 0.600]"
    assert interval(0.5, (math.nan, math.nan)) == "0.500"
    assert interval(0.5, None, digits=2) == "0.50"
    assert interval(0.01, (-0.03, 0.05), signed=True) == "+0.010 [-0.030, +0.050]"
    assert interval(0.5, (0.4, 0.6), bold=True) == "**0.500** [0.400, 0.600]"


def test_budget_labels():
    assert eps_label(1 / 255) == "1/255" and eps_label(0.5 / 255) == "0.5/255"
    assert eps_key(4 / 255) == str(4 / 255) and float(eps_key(4 / 255)) == 4 / 255


def _metrics(srcc: float) -> dict:
    return {"srcc": srcc, "srcc_ci": [srcc - 0.1, srcc + 0.1], "scores": [0.1, 0.2]}


def test_an_audit_report_round_trips_through_json():
    report = AuditReport(
        model="m", images=2, attacks=["fgsm", "pgd"], eps=[1 / 255, 4 / 255],
        results={e: {"clean": _metrics(0.9), "fgsm": _metrics(0.5), "pgd": _metrics(0.3 - e),
                     "worst": {**_metrics(0.2 - e), "from": "pgd"}} for e in (1 / 255, 4 / 255)},
        unbounded={"reflect10": {"srcc": 0.0}},
        diagnostics=[Check("metrics_finite", None, True, "ok"), Check("x", 1 / 255, False, "d")],
        seconds=1.5, machine={"CPU": "Xeon", "CPU kernels": "ATen AVX512", "threads": "1"},
    )  # fmt: skip
    data = json.loads(json.dumps(report.to_json()))
    assert set(data["results"]) == {str(1 / 255), str(4 / 255)} and "certified" not in data
    back = AuditReport.from_json(data)
    assert back == report
    assert back.clean["srcc"] == 0.9 and back.failed == ["x"]
    assert back.worst(4 / 255)["srcc"] == pytest.approx(0.2 - 4 / 255)
    assert back.brief()["worst"][str(4 / 255)] == (back.worst(4 / 255)["srcc"], "pgd")


def test_the_worst_case_falls_back_to_the_lowest_attack():
    worst = worst_of({"clean": _metrics(0.9), "a": _metrics(0.4), "b": _metrics(0.2)})
    assert worst["srcc"] == 0.2 and worst["from"] == "b"  # the report's cell said "()"
    for order in ("ab", "ba"):  # an undefined SRCC (NaN) first or last: never the worst
        srcc = {"a": float("nan"), "b": 0.2}
        worst = worst_of({"clean": _metrics(0.9), **{k: _metrics(srcc[k]) for k in order}})
        assert worst["from"] == "b"


@pytest.mark.parametrize("path", sorted(COMMITTED.glob("runs/*/audit/*/report.json"))[:4],
                         ids=lambda p: "/".join(p.parts[-4:-1]))  # fmt: skip
def test_a_committed_audit_reads_back_to_the_same_json(path):
    data = json.loads(path.read_text())
    assert json.loads(json.dumps(AuditReport.from_json(data, path).to_json())) == data


def test_a_malformed_audit_report_is_named():
    with pytest.raises(ValueError, match=r"audit report bad\.json must be an object with"):
        AuditReport.from_json({"results": {}}, "bad.json")
    with pytest.raises(ValueError, match=r"audit report bad\.json is malformed"):
        AuditReport.from_json({"model": "m", "images": 1, "attacks": [], "eps": [],
                               "results": {"x": {}}, "diagnostics": []}, "bad.json")  # fmt: skip


@pytest.mark.parametrize("machine", [["Xeon"], {"CPU": 1}, {"CPU": "x" * 300},
                                     {str(k): "" for k in range(17)}])
def test_a_machine_that_is_not_a_few_short_strings_is_named(machine):
    path = next(COMMITTED.glob("runs/*/audit/*/report.json"))
    data = {**json.loads(path.read_text()), "machine": machine}
    with pytest.raises(ValueError, match="'machine' must be an object of at most 16 short"):
        AuditReport.from_json(data, "x.json")


def test_a_study_says_which_machines_its_audits_ran_on():
    path = next(COMMITTED.glob("runs/*/audit/*/report.json"))
    plain = AuditReport.from_json(json.loads(path.read_text()), path)
    assert audit_machines([plain, plain]) == ""  # audits from before machines were recorded
    xeon = dataclasses.replace(plain, machine={"CPU": "Xeon", "threads": "1"})
    epyc = dataclasses.replace(plain, machine={"CPU": "EPYC|\n", "threads": "1"})
    said = ", on CPU EPYC\\|\\n, threads 1; CPU Xeon, threads 1"  # escaped, each once
    assert audit_machines([xeon, epyc, xeon]) == said
    said = ", on CPU Xeon, threads 1 (1 of 2 audits recorded no machine)"
    assert audit_machines([xeon, plain]) == said


@pytest.mark.parametrize(("edit", "where"), [
    (lambda d, k: d["results"][k].pop("clean"), r"results\[1/255\] has no 'clean' metrics"),
    (lambda d, k: d["results"][k]["clean"].pop("srcc"),
     r"results\[1/255\]\['clean'\] needs a number \(or null\) 'srcc'"),
    (lambda d, k: d["results"][k]["pgd"].update(srcc="0.5"), r"\['pgd'\] needs a number"),
    (lambda d, k: d["results"][k]["worst"]["scores"].pop(),
     r"\['worst'\]\['scores'\] must be a list of \d+ numbers"),
    (lambda d, k: d["results"][k]["clean"].update(srcc_ci=[0.1]), r"'srcc_ci'\] must be a list"),
    (lambda d, k: d["certified"][0]["radii"][0].pop("width"),
     r"certified\[0\]\['radii'\]\[0\] needs a number \(or null\) 'width'"),
])  # fmt: skip
def test_a_report_whose_metrics_a_study_cannot_read_is_named_with_where(edit, where):
    # a hand-edited or hostile report.json in a study folder failed deep in the summary with a
    # bare KeyError (a traceback from the command line)
    path = next(Path(COMMITTED.parent, "certified-builtin-v2-native").glob(
        "runs/*/audit/*/report.json"))  # fmt: skip
    data = json.loads(path.read_text())
    AuditReport.from_json(data, path)
    edit(data, eps_key(1 / 255))
    with pytest.raises(ValueError, match=rf"audit report x\.json is malformed: .*{where}"):
        AuditReport.from_json(data, "x.json")
