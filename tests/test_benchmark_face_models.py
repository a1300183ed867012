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
    _reuse_runs(tmp_path, shared_env, figures)


def _reuse_runs(work, env, first: dict) -> None:
    """``--reuse-runs``: the finished runs that match are evaluated again, not trained; an
    unfinished one is trained again; other options do not match."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    from face_expression import reusable_run

    runs = work / "runs"
    best = runs / "face_cnn" / "best-000.ckpt"
    stamp = best.stat().st_mtime_ns
    (runs / "dan-seed1" / "last.ckpt").unlink()  # as if stopped before its last epoch
    # fmt: off
    again = run_benchmark(
        "face_expression", "--work", work, "--models", "face_cnn,dan_bagging", "--reuse-runs",
        "--train-per-class", "3", "--test-per-class", "3", "--backbone", "mini_xception",
        "--input-size", "48", "--epochs", "1", "--speed-batches", "1", env=env,
    )
    # fmt: on
    assert best.stat().st_mtime_ns == stamp  # not trained again
    for label in ("face_cnn", "dan"):  # its saved wall time, not the file times
        assert again["runs"][label]["training_seconds"] == first["runs"][label]["training_seconds"]
    assert (runs / "dan-seed1" / "last.ckpt").is_file()  # trained again
    score = ("accuracy", "macro_f1")
    assert [[r[k] for k in score] for r in again["rows"][:2]] == [
        [r[k] for k in score] for r in first["rows"][:2]
    ]
    options = ["--backbone", "mini_xception", "--input-size", "48", "--epochs", "1"]
    corpus = ["--images", str(work / "subset" / "train")]
    assert reusable_run(runs / "face_cnn", "face_expr_fer2013.yaml", [*options, *corpus])
    for other in (["--input-size", "64"], ["--epochs", "2"], ["--images", "/elsewhere"]):
        changed = [*options, *corpus]
        changed[changed.index(other[0]) + 1] = other[1]
        assert reusable_run(runs / "face_cnn", "face_expr_fer2013.yaml", changed) is None, other
    assert reusable_run(runs / "face_cnn", "dan_expr.yaml", [*options, *corpus]) is None


def test_unknown_models_are_named():
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "face_expression.py"), "--models", "dan,vgg"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 1 and "--models: unknown vgg (choose among face_cnn" in proc.stderr
