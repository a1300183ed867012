"""`extract` and `predict --backend ray` on a local Ray instance, on real clips (issue 16).

The reference is the local backend on the same clips with one torch thread (each Ray worker
declares one CPU and runs torch on one thread; the thread count changes float sums in their
last bits, nothing else).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import nonempty
from rich.console import Console
from typer.testing import CliRunner

import mmaffect
from mmaffect.backends import Backend
from mmaffect.cli import app
from mmaffect.media import probe
from mmaffect.predict import load_prediction

pytestmark = pytest.mark.slow

GRID = ["bbaf2n", "brbk7n", "lbax4n"]


@pytest.fixture(scope="module")
def ray_session():
    """A local Ray instance of 2 CPUs in this process (the backend uses it, and leaves it)."""
    try:
        import ray
    except ImportError:
        pytest.fail('Ray is not installed: pip install -e ".[ray]"', pytrace=False)
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def clips(shared_data) -> list[Path]:
    return nonempty(
        [p for vid in GRID for p in (shared_data / "video/grid").glob(f"{vid}.mpg")], "GRID"
    )


@contextlib.contextmanager
def one_torch_thread():
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def recorded() -> Console:
    return Console(file=io.StringIO(), width=300)


def arrays(cache: Path, video_id: str) -> dict[str, np.ndarray]:
    """``entry folder/array`` → array, for every entry of a video."""
    return {
        f"{npy.parent.name}/{npy.stem}": np.load(npy)
        for npy in sorted((cache / video_id).glob("*/*.npy"))
    }


def assert_same_entries(ours: Path, reference: Path, video_ids) -> None:
    for vid in video_ids:
        a, b = arrays(ours, vid), arrays(reference, vid)
        assert sorted(a) == sorted(b) and a, vid  # the same entries (same configuration hash)
        for name in a:
            if a[name].dtype.kind == "f":
                np.testing.assert_allclose(a[name], b[name], rtol=1e-6, atol=1e-5, err_msg=name)
            else:
                assert np.array_equal(a[name], b[name]), name


@pytest.fixture(scope="module")
def local_faces_speech(tmp_path_factory, clips, models_dir):
    """The local backend's faces and speech entries of the clips, and a file that is not media."""
    folder = tmp_path_factory.mktemp("ray_ref")
    broken = folder / "broken.mp4"
    broken.write_bytes(b"this is not a video" * 100)
    cache = folder / "cache"
    with one_torch_thread():
        report = mmaffect.extract(
            [*clips, broken], cache=cache, modalities="faces,speech", models_dir=models_dir,
            progress=False, console=recorded(),
        )  # fmt: skip
    return cache, broken, report


def test_extract_on_ray_matches_local_and_resumes(
    ray_session, local_faces_speech, clips, models_dir, tmp_path
):
    reference, broken, local = local_faces_speech
    cache, console = tmp_path / "cache", recorded()
    args = dict(modalities="faces,speech", models_dir=models_dir, progress=False)
    report = mmaffect.extract(
        [*clips, broken], cache=cache, backend=Backend("ray"), console=console, **args
    )
    text = console.file.getvalue()
    assert "ray: 2 worker(s) of 1 CPU on the Ray session of this process" in text
    assert "time per stage (summed over 2 workers)" in text
    assert report.stages["face detection"]["items"] == 3 * 75
    # the same summary and exit code as locally; the bad file failed once, with its message
    assert report.exit_code == local.exit_code == 1
    assert [(r.name, r.status, r.message) for r in report.batch.results] == [
        (r.name, r.status, r.message) for r in local.batch.results
    ]
    statuses = {r.name: r.status for r in report.batch.results}
    assert statuses == {**dict.fromkeys(GRID, "ok"), "broken": "failed"}
    assert "retrying" not in text
    assert_same_entries(cache, reference, GRID)
    assert list(cache.rglob("*.tmp")) == []

    metas = {p: p.stat().st_mtime_ns for p in cache.glob("*/*/meta.json")}
    again = mmaffect.extract(clips, cache=cache, backend=Backend("ray"), console=recorded(), **args)
    assert [r.status for r in again.batch.results] == ["skipped"] * 3
    assert all(r.up_to_date for r in again.batch.results)
    assert "face detection" not in again.stages
    # the local backend resumes a Ray run too
    local_again = mmaffect.extract(clips, cache=cache, console=recorded(), **args)
    assert [r.status for r in local_again.batch.results] == ["skipped"] * 3
    assert {p: p.stat().st_mtime_ns for p in cache.glob("*/*/meta.json")} == metas


def test_worker_killed_mid_video_is_retried(
    ray_session, local_faces_speech, clips, models_dir, tmp_path
):
    """kill -9 of the worker writing an entry: the video runs again, and nothing is corrupt."""
    reference, _, _ = local_faces_speech
    cache, console, killed = tmp_path / "cache", recorded(), []

    def kill_the_first_writer() -> None:
        deadline = time.monotonic() + 300
        while not killed and time.monotonic() < deadline:
            for tmp in cache.glob("*/.faces-*.tmp"):  # .<entry>.<pid>.<random>.tmp
                pid = int(tmp.name.split(".")[-3])
                os.kill(pid, signal.SIGKILL)
                killed.append((tmp.parent.name, pid))
                return
            time.sleep(0.005)

    killer = threading.Thread(target=kill_the_first_writer, daemon=True)
    killer.start()
    report = mmaffect.extract(
        clips, cache=cache, modalities="faces", models_dir=models_dir, progress=False,
        backend=Backend("ray"), console=console,
    )  # fmt: skip
    killer.join()
    assert killed, "no worker was caught writing an entry"
    video, pid = killed[0]
    assert pid != os.getpid()
    text = console.file.getvalue()
    assert (
        f"warning: {video}: its Ray worker was lost (it became unreachable: killed, or its node "
        "lost); retrying it (attempt 2 of 3)" in text
    )
    assert report.exit_code == 0, text
    assert [r.status for r in report.batch.results] == ["ok"] * 3
    assert list(cache.rglob("*.tmp")) == []  # the dead worker's temporary entry is gone
    for vid in GRID:  # complete, and what the local backend makes
        a, b = arrays(cache, vid), arrays(reference, vid)
        faces = sorted(k for k in b if k.startswith("faces-"))
        assert sorted(a) == faces
        for name in faces:
            np.testing.assert_allclose(a[name], b[name], rtol=1e-6, atol=1e-5, err_msg=name)


def test_predict_on_ray_matches_local_and_resumes(ray_session, clips, models_dir, tmp_path):
    two = clips[:2]
    args = ["--no-words", "--no-progress", "--models-dir", str(models_dir)]
    with one_torch_thread():
        local = CliRunner().invoke(
            app, ["predict", *map(str, two), "--out", str(tmp_path / "local"), *args]
        )
    assert local.exit_code == 0, local.output
    cmd = ["predict", *map(str, two), "--out", str(tmp_path / "ray"), "--backend", "ray", *args]
    res = CliRunner().invoke(app, cmd)
    assert res.exit_code == 0, res.output
    assert "predict summary: 2 input(s): 2 ok, 0 skipped, 0 failed" in res.output
    for clip in two:
        ours = load_prediction(tmp_path / "ray" / "predictions" / f"{clip.stem}.npz")
        ref = load_prediction(tmp_path / "local" / "predictions" / f"{clip.stem}.npz")
        assert len(ours) == len(ref) == probe(clip).video.frames
        for name in ("expr_probs", "va", "au_probs", "face_box", "head_pose"):
            np.testing.assert_allclose(
                getattr(ours, name), getattr(ref, name), rtol=0, atol=1e-4, err_msg=name
            )
        for track in ("EXPR", "AU", "VA"):
            lines = (tmp_path / "ray" / "abaw3" / track / f"{clip.stem}.txt").read_text()
            assert len(lines.splitlines()) == len(ref) + 1
    runs = [json.loads((tmp_path / d / "run.json").read_text()) for d in ("ray", "local")]
    assert runs[0]["videos"] == runs[1]["videos"]

    kept = {p: p.stat().st_mtime_ns for p in (tmp_path / "ray").rglob("*.npz")}
    again = CliRunner().invoke(app, cmd)
    assert again.exit_code == 0, again.output
    assert "predict summary: 2 input(s): 0 ok, 2 skipped, 0 failed" in again.output
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "ray").rglob("*.npz")} == kept


def test_ctrl_c_cancels_the_workers_and_exits_130(clips, models_dir, tmp_path):
    """Its own local Ray instance (the CLI starts and stops it); SIGINT to the whole process
    group, as a terminal sends it, while a worker is writing an entry."""
    cache = tmp_path / "cache"
    cmd = [
        sys.executable, "-m", "mmaffect", "extract", *map(str, clips), "--cache", str(cache),
        "--modalities", "faces,speech", "--models-dir", str(models_dir), "--no-progress",
        "--backend", "ray",
    ]  # fmt: skip
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    deadline = time.monotonic() + 300
    while not list(cache.rglob(".*.tmp")):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "no worker ever wrote an entry"
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert "interrupted: finished entries are kept; re-run to resume" in stderr
    assert list(cache.rglob("*.tmp")) == []
    done = {p: p.stat().st_mtime_ns for p in cache.glob("*/*/meta.json")}
    assert len(done) < 6

    local = [c for c in cmd if c not in ("--backend", "ray")]  # resumed by the local backend
    again = subprocess.run(local, capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    assert len(list(cache.glob("*/*/meta.json"))) == 6
    assert all(p.stat().st_mtime_ns == t for p, t in done.items())  # not redone


def test_without_ray_the_ray_backend_says_how_to_install_it(tmp_path, shared_data):
    clip = shared_data / "video/grid/bbaf2n.mpg"
    blocked = "import sys; sys.modules['ray'] = None; from mmaffect.cli import main; main()"
    for command in (
        ["extract", "--cache", str(tmp_path / "c")],
        ["predict", "--out", str(tmp_path / "o")],
    ):
        res = subprocess.run(
            [sys.executable, "-c", blocked, *command, str(clip), "--backend", "ray"],
            capture_output=True, text=True, env={**os.environ, "COLUMNS": "200"},
        )  # fmt: skip
        assert res.returncode == 2, res.stderr
        assert (
            'error: --backend ray needs Ray, which is not installed (pip install "mmaffect[ray]")'
            in res.stderr
        )
    assert not (tmp_path / "c").exists() and not (tmp_path / "o").exists()  # nothing was done


def test_an_unreachable_cluster_is_a_usage_error(tmp_path, shared_data):
    clip = shared_data / "video/grid/bbaf2n.mpg"
    cmd = [sys.executable, "-m", "mmaffect", "extract", str(clip), "--cache", str(tmp_path / "c")]
    res = subprocess.run(
        [*cmd, "--backend", "ray", "--address", "127.0.0.1:9"], capture_output=True, text=True,
        env={**os.environ, "COLUMNS": "300"}, timeout=60,
    )  # fmt: skip
    assert res.returncode == 2, res.stderr
    assert "error: cannot reach the Ray cluster at 127.0.0.1:9: Connection refused" in res.stderr
    assert list((tmp_path / "c").rglob("*.npy")) == []


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--address", "auto"], "--address is only for --backend ray (add --backend ray)"),
        (
            ["--ray-workers", "2", "--worker-cpus", "2"],
            "--ray-workers, --worker-cpus are only for --backend ray",
        ),
        (
            ["--backend", "ray", "--device", "cuda:1"],
            "--device cuda:1 names a GPU of this machine, but with --backend ray Ray gives each "
            "worker its GPU (use --device cuda, and --worker-gpus for the fraction of a GPU per "
            "worker)",
        ),
        (["--backend", "ray", "--worker-gpus", "2"], "--worker-gpus must be a fraction of one GPU"),
        (["--backend", "spark"], "unknown backend 'spark' (choose local or ray)"),
    ],
)
def test_bad_backend_options_are_usage_errors(tmp_path, shared_data, options, message):
    clip = shared_data / "video/grid/bbaf2n.mpg"
    for command in (
        ["extract", "--cache", str(tmp_path / "c")],
        ["predict", "--out", str(tmp_path / "o")],
    ):
        res = CliRunner().invoke(app, [*command, str(clip), *options], env={"COLUMNS": "300"})
        assert res.exit_code == 2, res.output
        assert message in " ".join(res.output.split()), res.output


def test_scale_benchmark_runs(shared_data, models_dir, tmp_path):
    """benchmarks/scale.py's code path on one clip (no timing is asserted)."""
    clip = shared_data / "video/grid/bbaf2n.mpg"
    out = tmp_path / "scale.json"
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "scale.py"
    env = {**os.environ, "MMAFFECT_TEST_DATA": str(shared_data), "MMAFFECT_MODELS": str(models_dir)}
    cmd = [sys.executable, str(script), str(clip), "--modalities", "faces", "--workers", "1"]
    proc = subprocess.run([*cmd, "--json", str(out)], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    runs = json.loads(out.read_text())["runs"]
    assert [r["config"] for r in runs] == ["local", "ray x1"]
    for run in runs:
        assert run["videos"] == 1 and run["frames"] == probe(clip).video.frames
        assert run["frames_per_s"] > 0 and run["steady_video_s"] > 0
    assert runs[1]["ray_start_s"] > 0 and runs[1]["call_ms"] > 0
    assert runs[1]["stages"]["start workers"]["seconds"] > 0
