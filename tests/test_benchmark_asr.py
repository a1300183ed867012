"""benchmarks/asr_wer.py: its text normaliser, and a short real run (tiny.en on 2 GRID clips)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import pytest
from conftest import REPO

SCRIPT = REPO / "benchmarks" / "asr_wer.py"


@pytest.fixture(scope="module")
def asr_wer():
    sys.path.insert(0, str(SCRIPT.parent))  # the script imports benchmarks/_common.py
    spec = importlib.util.spec_from_file_location("asr_wer", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    ("digits", "words"),
    [
        ("0", "zero"),
        ("2", "two"),
        ("42", "forty two"),
        ("123", "one hundred twenty three"),
        ("1813", "eighteen thirteen"),
        ("1905", "nineteen oh five"),
        ("1900", "nineteen hundred"),
        ("2005", "two thousand five"),
        ("007", "zero zero seven"),
    ],
)
def test_number_words(asr_wer, digits, words):
    assert asr_wer.number_words(digits) == words


def test_normalise_reference_and_hypothesis_alike(asr_wer):
    n = asr_wer.normalise
    assert n("Set white with P2 soon.") == n("SET WHITE WITH P TWO SOON")
    assert n("In 1813.") == ["in", "eighteen", "thirteen"]
    assert n("8. The Press Yard.") == ["eight", "the", "press", "yard"]
    assert n("I\u2019m Abigail, 'quoted'  twenty-one") == [
        "i'm",
        "abigail",
        "quoted",
        "twenty",
        "one",
    ]
    assert n("In 1813.", spell_digits=False) == ["in", "1813"]


@pytest.mark.slow
def test_tiny_en_on_two_grid_clips(shared_data, models_dir, tmp_path):
    out = tmp_path / "asr.json"
    env = {**os.environ, "MMAFFECT_TEST_DATA": str(shared_data), "MMAFFECT_MODELS": str(models_dir)}
    args = ["--models", "whisper-tiny.en", "--datasets", "grid", "--limit", "2"]
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), *args, "--json", str(out)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["settings"]["beam_size"] == 1 and result["settings"]["vad"] is True
    r = result["models"]["whisper-tiny.en"]
    grid = r["datasets"]["grid"]
    assert grid["clips"] == 2 and len(r["clips"]) == 2
    assert grid["ref_words"] == 12  # 6 words per GRID sentence
    assert grid["errors"] == grid["substitutions"] + grid["deletions"] + grid["insertions"]
    # Measured 0.25 (raw, digits not spelled out: 0.58, as Whisper writes "P2" for "p two").
    assert 0.0 <= grid["wer"] < 0.5, r["clips"]
    assert r["overall"]["wer"] == grid["wer"]
    assert all(c["hypothesis"] and c["reference"] for c in r["clips"])
    assert r["x_realtime"] > 0 and r["load_seconds"] > 0
    # The aligned clip comes first, so --limit 2 includes it. Measured: 6/6, 148 ms / 108 ms.
    t = r["timing"]
    assert t is not None and t["clip"] == "id2_vcd_swwp2s.mpg"
    assert abs(t["clip_seconds"] - t["align_seconds"]) < 0.05  # 1/25000 s units are right
    assert t["matched"] >= 5
    assert t["start_mae_ms"] < 300 and t["end_mae_ms"] < 300
