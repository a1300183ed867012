"""Nothing hangs and nothing is lost: stalled stages, failing videos, Ctrl-C (issue 11)."""

from __future__ import annotations

import gc
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import REPO, make_video

from mmaffect.errors import MediaError, StageStalled
from mmaffect.faces import landmarker as landmarker_module
from mmaffect.features.cache import FeatureCache
from mmaffect.features.stages import StageClock
from mmaffect.features.vision import ClipConfig, FaceConfig, FrameConfig, VisionModels, run_vision
from mmaffect.media import MediaSource, probe
from mmaffect.media.source import OpenedSource
from mmaffect.watchdog import Heartbeat, WatchedThreads, WorkCancelled


def _children(pattern: str, parent: int | None = None) -> list[int]:
    """Pids of the live children of ``parent`` (this process) whose command line contains
    ``pattern``."""
    parent = os.getpid() if parent is None else parent
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            cmdline = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if int(fields[1]) == parent and fields[0] != "Z" and pattern in cmdline:
            pids.append(int(stat.parent.name))
    return pids


def _vision_models(models_dir: Path) -> VisionModels:
    return VisionModels(
        models_dir=models_dir, device="cpu", face=FaceConfig(), frame=FrameConfig(),
        clip=ClipConfig(), clock=StageClock(),
    )  # fmt: skip


@pytest.fixture
def truncated(tmp_path) -> Path:
    """A clip cut in half (moov first): its container lists 50 frames, about 20 decode."""
    whole = make_video(
        tmp_path / "whole.tmpvid",
        seconds=2,
        size="320x240",
        extra=["-movflags", "+faststart", "-f", "mp4"],
    )
    data = whole.read_bytes()
    path = tmp_path / "truncated.mp4"
    path.write_bytes(data[: len(data) // 2])
    return path


def test_landmarker_is_never_closed_by_the_garbage_collector(models_dir):
    # Closing from a finaliser deadlocked batches: MediaPipe's close() waits for its own worker
    # thread, on which the collector may run. A dropped landmarker stays open until exit.
    lm = landmarker_module.FaceLandmarker(models_dir / "face_landmarker.task")
    assert not hasattr(landmarker_module.FaceLandmarker, "__del__")
    task = lm._task
    del lm
    gc.collect()
    assert task._handle is not None  # still open: nothing closed it from the collector
    (kept,) = [x for x in landmarker_module._OPEN if x._task is task]
    kept.close()
    assert task._handle is None and kept not in landmarker_module._OPEN


def test_a_video_failing_mid_decode_closes_its_landmarker_and_ffmpeg(
    truncated, tmp_path, models_dir
):
    # Trusting the header count, decoding ends short mid-pass: the landmarker and the frame
    # stream must be closed by the pass itself, not left to the garbage collector.
    info = probe(truncated, count="header")
    opened = OpenedSource(MediaSource("truncated", truncated, "video", "truncated"), info)
    before = set(landmarker_module._OPEN)
    with pytest.raises(MediaError, match="truncated.mp4 is truncated or damaged"):
        run_vision(
            opened, cache=FeatureCache(tmp_path / "cache"), models=_vision_models(models_dir),
            wanted={"clip"}, batch_size=8,
        )  # fmt: skip
    assert set(landmarker_module._OPEN) == before
    assert _children(str(truncated)) == []
    assert list((tmp_path / "cache").rglob("*.tmp")) == []  # no half-written entry


def test_cancelled_pass_stops_at_the_next_chunk_and_cleans_up(tmp_path, models_dir):
    video = make_video(tmp_path / "clip.mp4", seconds=3, size="320x240")
    opened = OpenedSource(MediaSource("clip", video, "video", "clip"), probe(video))
    heartbeat = Heartbeat()
    chunks_seen = []

    def on_frames(n):
        chunks_seen.append(n)
        heartbeat.cancel()  # as the waiter does on Ctrl-C

    before = set(landmarker_module._OPEN)
    with pytest.raises(WorkCancelled), heartbeat.active():
        run_vision(
            opened, cache=FeatureCache(tmp_path / "cache"), models=_vision_models(models_dir),
            wanted={"clip"}, batch_size=8, on_frames=on_frames,
        )  # fmt: skip
    assert chunks_seen == [8]
    assert set(landmarker_module._OPEN) == before
    assert _children(str(video)) == []
    assert not list((tmp_path / "cache").rglob("meta.json"))
    assert list((tmp_path / "cache").rglob("*.tmp")) == []


def test_a_stuck_mediapipe_call_stalls_the_video_and_is_abandoned(
    tmp_path, models_dir, monkeypatch
):
    # MediaPipe runs in a thread of its own behind the networks; the vision pass waits for it
    # without beating, so a call that never returns is a stall the watchdog sees, and the
    # landmarker is abandoned (never closed: closing would wait on the stuck call)
    video = REPO / "sample_media" / "astronaut_talking.mp4"  # a face in every frame
    opened = OpenedSource(MediaSource("talking", video, "video", "talking"), probe(video))
    release = threading.Event()

    def stuck(self, images, times=None, **kw):
        release.wait()
        return landmarker_module.LandmarkerResult.empty(len(images))

    monkeypatch.setattr(landmarker_module.FaceLandmarker, "process", stuck)
    abandoned = []
    monkeypatch.setattr(landmarker_module.FaceLandmarker, "abandon",
                        lambda self: abandoned.append(self))  # fmt: skip
    models = _vision_models(models_dir)
    assert models.detector and models.backbone and models.expression  # loaded before the clock
    threads = WatchedThreads(1, stall_seconds=2.0)
    work = threads.submit(
        lambda: run_vision(opened, cache=FeatureCache(tmp_path / "cache"), models=models,
                           wanted={"clip"}, batch_size=8),
        heartbeat=Heartbeat("vision"),
    )  # fmt: skip
    try:
        with pytest.raises(StageStalled, match="no progress for 2 s in stage 'vision'"):
            threads.result(work)
        assert len(abandoned) == 1
    finally:
        release.set()


def test_watched_thread_that_stops_beating_is_given_up():
    threads = WatchedThreads(1, stall_seconds=0.5)
    release = threading.Event()
    abandoned = []
    heartbeat = Heartbeat("ASR")
    heartbeat.on_abandon(lambda: abandoned.append(True))
    stuck = threads.submit(release.wait, heartbeat=heartbeat)
    start = time.monotonic()
    with pytest.raises(StageStalled, match=r"no progress for 0.5 s in stage 'ASR'; this input"):
        threads.result(stuck)
    assert 0.5 < time.monotonic() - start < 5 and abandoned == [True]
    # Its slot was given back: the next unit runs although the stuck one still holds its thread.
    assert threads.result(threads.submit(lambda: 42, heartbeat=Heartbeat())) == 42
    start = time.monotonic()
    assert not threads.settle(0.3)  # still stuck: waited for, but not for ever
    assert 0.3 <= time.monotonic() - start < 2
    release.set()
    assert threads.settle(5)  # unwound once what it waited on returned


def test_stalled_decoder_fails_its_video_and_the_batch_goes_on(tmp_path, models_dir):
    import mmaffect

    folder = tmp_path / "in"
    folder.mkdir()
    videos = [make_video(folder / f"clip{i}.mp4", seconds=4, size="320x240") for i in range(3)]
    stopped: list[int] = []

    def stop_first_decoder():  # a decoder that hangs, as on a stuck network share
        deadline = time.monotonic() + 120
        while not stopped and time.monotonic() < deadline:
            for pid in _children(str(videos[0])):
                os.kill(pid, signal.SIGSTOP)
                stopped.append(pid)
            time.sleep(0.01)

    watcher = threading.Thread(target=stop_first_decoder, daemon=True)
    watcher.start()
    report = mmaffect.extract(
        [folder], cache=tmp_path / "cache", models_dir=models_dir, modalities="faces",
        stall_seconds=3, progress=False, batch_size=8,
    )  # fmt: skip
    watcher.join()
    assert stopped, "the decoder of clip0 was never seen"
    assert report.exit_code == 1
    (failed,) = report.batch.failed
    assert failed.name == "clip0"
    assert failed.message == (
        "no progress for 3 s in stage 'vision'; this input was given up "
        "(re-run to retry it; --stall-timeout sets the limit)"
    )
    assert [r.name for r in report.batch.ok] == ["clip1", "clip2"]
    assert not Path(f"/proc/{stopped[0]}").exists()  # killed and reaped, not left stopped
    assert list((tmp_path / "cache").rglob("*.tmp")) == []
    # A re-run retries the given-up video and reuses the others.
    again = mmaffect.extract(
        [folder], cache=tmp_path / "cache", models_dir=models_dir, modalities="faces",
        progress=False,
    )  # fmt: skip
    assert again.exit_code == 0
    assert [r.name for r in again.batch.ok] == ["clip0"]
    assert [r.name for r in again.batch.skipped] == ["clip1", "clip2"]


def _interrupt_when(proc: subprocess.Popen, ready, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the run never got there"
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGINT)


@pytest.mark.slow
def test_ctrl_c_in_predict_keeps_finished_videos_and_exits_130(tmp_path, shared_data, models_dir):
    clips = sorted((shared_data / "video/grid").glob("*.mpg"))[:3]
    out = tmp_path / "out"
    cmd = [
        sys.executable, "-m", "mmaffect", "predict", *map(str, clips), "--out", str(out),
        "--no-words", "--no-progress", "--models-dir", str(models_dir),
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = clips[0].stem
    # Each video's outputs are written as soon as it is done, before the batch ends.
    _interrupt_when(proc, lambda: (out / "abaw3" / "VA" / f"{first}.txt").is_file())
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert "interrupted" in stderr
    assert "no complete" not in stderr and "failed" not in stderr.replace("0 failed", "")
    assert not (out / "run.json").exists()
    table = (out / "table" / f"{first}.csv").read_text().splitlines()
    assert len(table) == probe(clips[0]).video.frames + 1
    assert list(out.rglob("*.tmp")) == []
    kept = (out / "predictions" / f"{first}.npz").stat().st_mtime_ns

    again = subprocess.run(cmd, capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    assert (out / "predictions" / f"{first}.npz").stat().st_mtime_ns == kept  # not redone
    run = json.loads((out / "run.json").read_text())
    assert sorted(run["videos"]) == sorted(c.stem for c in clips)


def test_ctrl_c_in_probe_exits_130(tmp_path):
    # A folder large enough that probing takes a while; Ctrl-C after the first result.
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(6):
        make_video(folder / f"clip{i}.mkv", seconds=6, size="640x360")  # MKV: counted by decoding
    cmd = [sys.executable, "-m", "mmaffect", "probe", str(folder), "--count", "decode"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _interrupt_when(proc, lambda: _children("clip", parent=proc.pid))  # counting the first
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "interrupted" in stderr and "Aborted" not in stderr
