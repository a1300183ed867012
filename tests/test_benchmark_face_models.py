"""``benchmarks/face_expression.py --models``: several systems (a seed image model and an
ensemble) trained and evaluated beside the single backbone in one run, on real FER2013 faces
(3 per class; a check of the code path, not of the figures)."""

# ruff: noqa: F811 - pytest fixtures imported from other test modules are parameters here

from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import REPO
from test_benchmarks import run_benchmark, shared_env  # noqa: F401 - fixture


@pytest.mark.slow
def test_models_are_trained_and_evaluated_side_by_side(tmp_path, shared_env):
    # fmt: off
    figures = run_benchmark(
        "face_expression", "--work", tmp_path, "--models", "face_cnn,dan_bagging",
        "--train-per-class", "3", "--test-per-class", "3", "--backbone", "mini_xception",
        "--input-size", "48", "--epochs", "1", "--speed-batches", "1", env=shared_env,
    )
    # fmt: on
    assert set(figures["runs"]) == {"face_cnn", "dan", "dan-seed1"}  # the members trained once
    bag = figures["ensembles"]["dan_bagging"]
    assert bag["weights"] == [0.5, 0.5] and bag["members"] == ["dan", "dan-seed1"]
    member_time = figures["runs"]["dan"]["training_seconds"]
    member_time += figures["runs"]["dan-seed1"]["training_seconds"]
    assert bag["training_seconds"] == pytest.approx(member_time + bag["ensemble_seconds"], 0.01)
    rows = figures["rows"]
    assert [(r["model"].split(" ")[0], r["flip"]) for r in rows] == [
        ("face_cnn", False), ("face_cnn", True), ("ensemble", False), ("ensemble", True),
        ("mini-Xception", False), ("mini-Xception", True),
    ]  # fmt: skip
    assert rows[2]["system"] == "dan_bagging" and "training_seconds" not in rows[4]
    assert figures["privatetest"]["faces"] == 21
    for r in rows:
        assert 0 <= r["accuracy"] <= 1 and r["faces_per_s"] > 0


def test_unknown_models_are_named():
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "face_expression.py"), "--models", "dan,vgg"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 1 and "--models: unknown vgg (choose among face_cnn" in proc.stderr
