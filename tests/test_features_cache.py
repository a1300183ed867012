"""The feature cache and the face tracker (no model involved)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mmaffect.faces.retinaface import Detections
from mmaffect.faces.tracking import SubjectTracker, TrackerConfig
from mmaffect.features.cache import EntryKey, FeatureCache, RowCountError, config_hash
from mmaffect.features.timing import FrameTiming


def test_timing_grid():
    t = FrameTiming(fps=30000 / 1001, n_frames=4, start=0.5)
    np.testing.assert_allclose(t.times(), 0.5 + np.arange(4) * 1001 / 30000)
    edges = t.frame_edges()
    assert len(edges) == 5 and edges[0] < t.times()[0] < edges[1]


def test_write_load_and_freshness(tmp_path):
    cache = FeatureCache(tmp_path)
    key = EntryKey("vid", "speech", config_hash({"n_mfcc": 40}))
    timing = FrameTiming(25.0, 10)
    values = np.random.default_rng(0).normal(size=(10, 3)).astype(np.float32)
    source = {"path": "/x.mp4", "size": 100, "mtime_ns": 1}
    cache.write(
        key,
        {"values": values},
        timing=timing,
        config={"n_mfcc": 40},
        source=source,
        columns=["a", "b", "c"],
    )
    entry = cache.load(key)
    np.testing.assert_array_equal(entry["values"], values)
    assert entry.timing == timing and entry.columns == ["a", "b", "c"]
    assert cache.is_fresh(key, source)
    assert not cache.is_fresh(key, {**source, "size": 101})  # the video changed: stale
    other = EntryKey("vid", "speech", config_hash({"n_mfcc": 20}))
    assert not cache.is_fresh(other, source)  # another configuration: its own entry


def test_row_count_is_validated_and_nothing_is_left(tmp_path):
    cache = FeatureCache(tmp_path)
    key = EntryKey("vid", "frame", "0" * 64)
    with pytest.raises(RowCountError, match="array 'values' has 9 rows but the video has 10"):
        cache.write(
            key, {"values": np.zeros((9, 2), np.float32)}, timing=FrameTiming(25.0, 10), config={}
        )
    with pytest.raises(ValueError, match="NaN"):
        cache.write(
            key,
            {"values": np.full((10, 2), np.nan, np.float32)},
            timing=FrameTiming(25.0, 10),
            config={},
        )
    assert not cache.entry_dir(key).exists()
    assert list((tmp_path / "vid").glob(".*")) == []


def test_streaming_writer_discards_on_error(tmp_path):
    cache = FeatureCache(tmp_path)
    key = EntryKey("vid", "frame", "1" * 64)
    with (
        pytest.raises(RuntimeError),
        cache.writer(key, timing=FrameTiming(25.0, 5), config={}) as w,
    ):
        w.array("values", (4,))[:2] = 1.0
        raise RuntimeError("decoder died")
    assert not cache.entry_dir(key).exists() and list((tmp_path / "vid").iterdir()) == []


def test_fill_writes_block_by_block(tmp_path, monkeypatch):
    import mmaffect.features.cache as cache_module

    monkeypatch.setattr(cache_module, "BLOCK_ROWS", 7)
    cache = FeatureCache(tmp_path)
    key = EntryKey("vid", "word", "2" * 64)
    asked = []

    def rows(start: int, stop: int) -> np.ndarray:
        asked.append((start, stop))
        return np.arange(start, stop, dtype=np.float32)[:, None] * [1.0, -1.0]

    with cache.writer(key, timing=FrameTiming(25.0, 30), config={}) as w:
        w.fill(w.array("values", (2,)), rows)
        w.commit()
    assert asked == [(0, 7), (7, 14), (14, 21), (21, 28), (28, 30)]
    values = np.asarray(cache.load(key)["values"])
    np.testing.assert_array_equal(values[:, 0], np.arange(30))
    np.testing.assert_array_equal(values[:, 1], -np.arange(30))


def _rss_file_mb() -> float:
    """This process's resident file-backed memory (memory maps), MB (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssFile:"):
            return int(line.split()[1]) / 1024
    pytest.skip("no RssFile in /proc/self/status")


@pytest.mark.parametrize("release", [True, False])
def test_written_rows_leave_memory_and_stay_in_the_file(tmp_path, release):
    # 120 MB of features written block by block, as a long video's frame entry is: with the
    # pages released after each block the process holds about one block, without it all of it
    n, width, block = 24_000, 1280, 1_000
    cache = FeatureCache(tmp_path)
    key = EntryKey("long", "frame", config_hash({"x": 1}))
    before = _rss_file_mb()
    grown = 0.0
    with cache.writer(key, timing=FrameTiming(fps=30.0, n_frames=n), config={"x": 1}) as w:
        values = w.array("values", (width,))
        for start in range(0, n, block):
            values[start : start + block] = np.arange(start, start + block)[:, None]
            if release:
                w.release()
            grown = max(grown, _rss_file_mb() - before)
        w.commit()
    if release:
        assert grown < 20, grown
    else:  # the check is able to see the growth it guards against
        assert grown > 100, grown
    loaded = np.asarray(cache.load(key)["values"])
    np.testing.assert_array_equal(loaded[:, 0], np.arange(n))
    np.testing.assert_array_equal(loaded[:, -1], np.arange(n))


def test_dead_process_temporaries_are_removed(tmp_path):
    cache = FeatureCache(tmp_path)
    stale = tmp_path / "vid" / ".frame-abc.999999999.x1y2.tmp"  # pid that cannot exist
    stale.mkdir(parents=True)
    (stale / "values.npy").write_bytes(b"partial")
    cache.write(
        EntryKey("vid", "speech", "2" * 64),
        {"values": np.zeros((3, 1), np.float32)},
        timing=FrameTiming(25.0, 3),
        config={},
    )
    assert not stale.exists()


def test_live_temporaries_of_other_writers_are_kept(tmp_path):
    # The audio thread may be writing a transcript while the vision thread opens an entry.
    import os

    cache = FeatureCache(tmp_path)
    busy = tmp_path / "vid" / f".transcript-abc.json.{os.getpid()}.k3j2.tmp"
    busy.parent.mkdir(parents=True)
    busy.write_text("{}")
    foreign = tmp_path / "vid" / ".notes.tmp"  # not ours: no pid in the name
    foreign.write_text("x")
    cache.write(
        EntryKey("vid", "speech", "3" * 64),
        {"values": np.zeros((3, 1), np.float32)},
        timing=FrameTiming(25.0, 3),
        config={},
    )
    assert busy.exists() and foreign.exists()


def dets(*boxes, scores=None):
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    scores = np.ones(len(boxes), np.float32) if scores is None else np.asarray(scores, np.float32)
    return Detections(
        boxes=boxes, scores=scores, landmarks=np.zeros((len(boxes), 5, 2), np.float32)
    )


def test_tracker_follows_its_subject_not_the_largest_face():
    tracker = SubjectTracker(TrackerConfig())
    assert tracker.update(dets((100, 100, 200, 200), (400, 100, 450, 150))) == 0
    # A bigger face appears; the subject moves a little: still the subject.
    assert tracker.update(dets((380, 80, 560, 260), (105, 100, 205, 200))) == 1
    # The subject vanishes for a few frames: nobody else is taken.
    for _ in range(3):
        assert tracker.update(dets((380, 80, 560, 260))) is None
    assert tracker.update(dets((380, 80, 560, 260), (110, 100, 210, 200))) == 1


def test_tracker_reacquires_after_a_long_gap():
    tracker = SubjectTracker(TrackerConfig(max_gap=2))
    tracker.update(dets((0, 0, 50, 50)))
    for _ in range(3):
        tracker.update(dets())
    assert tracker.update(dets((300, 300, 320, 320), (500, 0, 600, 100))) == 1  # largest


def test_tracker_left_and_right_subjects():
    two = dets((600, 100, 700, 200), (100, 120, 190, 210), (900, 0, 910, 10))
    assert SubjectTracker(TrackerConfig(subject="left")).update(two) == 1
    # The tiny face at x=900 is ignored: right is the bigger face on the right.
    assert SubjectTracker(TrackerConfig(subject="right")).update(two) == 0
