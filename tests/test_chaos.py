"""Crash consistency, the shortened form of ``python -m benchmarks.chaos``: training
SIGKILLed anywhere (once while a checkpoint is written) and resumed, its tracking server
stopped and started, its checkpoint disk full once, against a run never disturbed.
"""

import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.parametrize("compile_mode", ["false", "background"])
def test_a_run_killed_anywhere_resumes_to_the_undisturbed_runs_params_and_metrics(
    tmp_path, monkeypatch, compile_mode
):
    # background: the disturbed run is given the reference's switch points; each process resumed
    # past them runs its pieces compiled from their first call, as the reference did.
    monkeypatch.syspath_prepend(str(REPO))
    from benchmarks import chaos

    out = tmp_path / "chaos.json"
    code = chaos.main(
        [
            "--compile",
            compile_mode,
            "--steps",
            "80",  # enough training left for the five kills
            "--kills",
            "5",
            "--outages",
            "1",
            "--outage-s",
            "3",
            "6",
            "--out",
            str(out),
        ]
    )
    report = json.loads(out.read_text())
    assert report["kills"] == 5 and report["kills_during_write"] >= 1
    assert report["outage_s"] >= 3.0
    # The full disk stopped the run with one line naming the folder, nothing written half.
    (error,) = report["disk_full_errors"]
    assert error.startswith("rlstack: error: [Errno 28] No space left in ") and "\n" not in error
    assert report["bit_identical"]  # params, optimizer state, carry and key
    assert (report["lost"], report["duplicated"], report["different"]) == (0, 0, 0)
    assert report["values"] > 0 and report["status"] == "FINISHED" and report["runs"] == 2
    assert report["left_clean"]  # no lock, no temp file
    if compile_mode == "background":
        assert report["compile_args"][0] == "--compile-switches"
    assert code == 0
