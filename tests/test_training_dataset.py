"""WindowDataset over a small hand-made feature cache and hand-written ABAW label files."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from mmaffect.annotations import (
    AU_12,
    EXPR_8,
    VA,
    VideoLabels,
    read_label_folder,
    read_mtl_file,
    write_video_labels,
)
from mmaffect.errors import InputError
from mmaffect.features.cache import EntryKey, FeatureCache, config_hash
from mmaffect.features.timing import FrameTiming
from mmaffect.training.dataset import (
    WindowDataset,
    class_balanced_sampler,
    collate,
    find_entries,
    make_loader,
    sample_weights,
)

N = 50
VIDEOS = {"vidA": 1, "vidB_left": 2}
MODS = {"frame": (1, 4), "clip": (2, 3), "speech": (3, 2), "word": (4, 3)}
NO_FACE = 10  # frame without a face in every video


def code(video: int, frame: np.ndarray | int, modality: int) -> np.ndarray | int:
    """The value every feature column holds: encodes video, frame and modality."""
    return video * 10000 + np.asarray(frame) * 10 + modality


def write_entry(cache: FeatureCache, vid: str, extractor: str, arrays: dict, salt: str = ""):
    cfg = {"extractor": extractor, "salt": salt}
    key = EntryKey(vid, extractor, config_hash(cfg))
    return cache.write(key, arrays, timing=FrameTiming(30.0, N), config=cfg)


@pytest.fixture()
def cache(tmp_path: Path) -> FeatureCache:
    cache = FeatureCache(tmp_path / "cache")
    frames = np.arange(N)
    valid = frames != NO_FACE
    for vid, v in VIDEOS.items():
        write_entry(cache, vid, "faces", {"found": valid})
        for m, (mc, d) in MODS.items():
            values = np.repeat(code(v, frames, mc)[:, None], d, axis=1).astype(np.float32)
            arrays = {"values": values}
            if m in ("frame", "clip"):
                arrays["valid"] = valid
            # word of the _left subject lives under the base id (fallback case)
            where = "vidB" if (vid == "vidB_left" and m == "word") else vid
            write_entry(cache, where, m, arrays)
    return cache


def expr_labels(tmp_path: Path, n_a: int = N + 1) -> dict[str, VideoLabels]:
    folder = tmp_path / "EXPR"
    a = np.arange(n_a) % 8
    a[[5, 6]] = -1  # sentinels: not sampled
    b = np.zeros(N, np.int64)
    b[:10] = 3  # vidB_left: 10 × class 3, 40 × class 0
    write_video_labels(folder / "vidA.txt", VideoLabels.from_values("vidA", EXPR_8, a))
    write_video_labels(folder / "vidB_left.txt", VideoLabels.from_values("vidB_left", EXPR_8, b))
    return read_label_folder(folder)


def test_window_contents_and_padding(cache: FeatureCache, tmp_path: Path):
    ds = WindowDataset(cache.root, expr_labels(tmp_path), window=8)
    i0 = int(np.flatnonzero((ds.frames == 0) & (ds._video_index == 0))[0])
    item = ds[i0]
    assert item["video_id"] == "vidA" and int(item["frame"]) == 0
    rows = np.array([0, 0, 0, 0, 0, 1, 2, 3])  # f - T//2 … f + T//2 - 1, start repeated
    for m, (mc, d) in MODS.items():
        assert item[f"feat_{m}"].shape == (8, d) and item[f"feat_{m}"].dtype == torch.float32
        np.testing.assert_array_equal(item[f"feat_{m}"][:, 0].numpy(), code(1, rows, mc))
        np.testing.assert_array_equal(item[f"mask_{m}"].numpy(), [0, 0, 0, 0, 1, 1, 1, 1])
    # last frame of vidB_left: the end is repeated
    i1 = int(np.flatnonzero((ds.frames == N - 1) & (ds._video_index == 1))[0])
    item = ds[i1]
    assert item["video_id"] == "vidB_left"
    rows = np.array([45, 46, 47, 48, 49, 49, 49, 49])
    np.testing.assert_array_equal(item["feat_speech"][:, 0].numpy(), code(2, rows, 3))
    np.testing.assert_array_equal(item["feat_word"][:, 0].numpy(), code(2, rows, 4))
    np.testing.assert_array_equal(item["mask_word"].numpy(), [1, 1, 1, 1, 1, 0, 0, 0])
    # a window in the middle holds exactly its frames
    i2 = int(np.flatnonzero((ds.frames == 30) & (ds._video_index == 0))[0])
    np.testing.assert_array_equal(ds[i2]["feat_clip"][:, 2].numpy(), code(1, np.arange(26, 34), 2))


def test_default_window_is_60(cache: FeatureCache, tmp_path: Path):
    ds = WindowDataset(cache, expr_labels(tmp_path), modalities=("frame",))
    item = ds[0]
    assert item["feat_frame"].shape == (60, 4)
    assert int(item["mask_frame"].sum()) == 29  # 30 padded rows, then 0..29 but not 10


def test_masks_and_has_face(cache: FeatureCache, tmp_path: Path):
    ds = WindowDataset(cache, expr_labels(tmp_path), window=4)
    i = int(np.flatnonzero((ds.frames == NO_FACE) & (ds._video_index == 0))[0])
    item = ds[i]  # window 8, 9, 10, 11: frame 10 has no face
    np.testing.assert_array_equal(item["mask_frame"].numpy(), [1, 1, 0, 1])
    np.testing.assert_array_equal(item["mask_clip"].numpy(), [1, 1, 0, 1])
    np.testing.assert_array_equal(item["mask_speech"].numpy(), [1, 1, 1, 1])
    assert not bool(item["has_face"]) and bool(ds[i + 1]["has_face"])
    assert int(item["expr"]) == NO_FACE % 8
    assert item["au"].shape == (12,) and bool((item["au"] == -1).all())
    assert item["va"].tolist() == [-5.0, -5.0]


def test_sentinels_and_count_plus_one(cache: FeatureCache, tmp_path: Path):
    ds = WindowDataset(cache, expr_labels(tmp_path), window=4)
    a = ds.frames[ds._video_index == 0]
    assert 5 not in a and 6 not in a and N not in a  # sentinels, and the 51st label line
    assert len(ds) == (N - 2) + N
    s = ds.summary()
    assert s["dropped_past_end"] == {"total": 1, "per_video": {"vidA": 1}}
    assert s["dropped_unannotated"]["total"] == 2
    assert s["entries"]["vidB_left"]["word"].startswith("word-")
    assert (ds.expr >= 0).all()


def test_stride(cache: FeatureCache, tmp_path: Path):
    ds = WindowDataset(cache, expr_labels(tmp_path), modalities=("clip",), stride=10)
    assert ds.frames[ds._video_index == 1].tolist() == [0, 10, 20, 30, 40]


def test_large_mismatch_is_an_error(cache: FeatureCache, tmp_path: Path):
    with pytest.raises(InputError) as err:
        WindowDataset(cache, expr_labels(tmp_path, n_a=N + 3), modalities=("frame",))
    msg = str(err.value)
    assert "vidA" in msg and "53 frames" in msg and "50 frames" in msg
    ds = WindowDataset(cache, expr_labels(tmp_path, n_a=N + 3), ("frame",), tolerance=3)
    assert ds.summary()["dropped_past_end"]["total"] == 3


def test_missing_entry_message(cache: FeatureCache, tmp_path: Path):
    folder = tmp_path / "lab"
    write_video_labels(folder / "vidC.txt", VideoLabels.from_values("vidC", EXPR_8, [1] * N))
    with pytest.raises(InputError) as err:
        WindowDataset(cache, read_label_folder(folder), modalities=("frame", "speech"))
    msg = str(err.value)
    assert "vidC" in msg and "'frame'" in msg
    assert "mmaffect extract" in msg and "--modalities frame" in msg


def test_left_right_fallback_to_base_id(cache: FeatureCache):
    found = find_entries(cache, "vidB_left", ["speech", "word"])
    assert found["speech"].parent.name == "vidB_left"  # the subject's own entry first
    assert found["word"].parent.name == "vidB"  # none under the subject: the base id
    with pytest.raises(InputError, match="vidB_right.*'frame'"):
        find_entries(cache, "vidB_right", ["frame"])  # vision has no base-id fallback


def test_config_choice(cache: FeatureCache):
    first = find_entries(cache, "vidA", ["frame"])["frame"]
    other = write_entry(cache, "vidA", "frame", {"values": np.ones((N, 4), np.float32)}, "b")
    meta_path = other.path / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta["created"] = "2000-01-01T00:00:00+0000"  # older: not the default
    meta_path.write_text(json.dumps(meta))
    assert find_entries(cache, "vidA", ["frame"])["frame"] == first
    chosen = find_entries(cache, "vidA", ["frame"], {"frame": meta["config_hash"][:12]})
    assert chosen["frame"] == other.path
    with pytest.raises(InputError, match="config deadbeef"):
        find_entries(cache, "vidA", ["frame"], {"frame": "deadbeef"})


def test_balanced_sampler_expr(cache: FeatureCache, tmp_path: Path):
    ds = WindowDataset(cache, expr_labels(tmp_path), modalities=("clip",), window=4)
    w = sample_weights(ds, "expr")
    counts = np.bincount(ds.expr)
    np.testing.assert_allclose(w, 1.0 / counts[ds.expr])
    # each class gets the same total weight
    totals = np.bincount(ds.expr, weights=w)
    np.testing.assert_allclose(totals[totals > 0], 1.0)
    sampler = class_balanced_sampler(ds, generator=torch.Generator().manual_seed(0))
    assert len(list(sampler)) == len(ds)


def test_balanced_sampler_au(cache: FeatureCache, tmp_path: Path):
    au = np.zeros((N, 12), np.int64)
    au[:20, 0] = 1  # AU1: 20 positives
    au[:4, 5] = 1  # AU10: 4 positives, rarest
    au[40:, :] = -1  # unannotated: weight 0 (and not sampled)
    au[45, 3] = 0  # partly annotated: sampled, all negative
    write_video_labels(tmp_path / "AU" / "vidA.txt", VideoLabels.from_values("vidA", AU_12, au))
    ds = WindowDataset(cache, read_label_folder(tmp_path / "AU"), ("frame",), window=4)
    assert len(ds) == 41
    w = sample_weights(ds, "au")
    np.testing.assert_allclose(w[:4], 1 / 4)  # rarest positive: AU10
    np.testing.assert_allclose(w[4:20], 1 / 20)
    np.testing.assert_allclose(w[20:], 1 / 21)  # 21 all-negative samples: one group
    assert ds[40]["au"].tolist()[3] == 0 and ds[40]["au"].tolist()[0] == -1


def test_mtl_and_several_tracks(cache: FeatureCache, tmp_path: Path):
    au = ",".join(["1"] + ["0"] * 11)
    lines = [
        "image,valence,arousal,expression,aus",
        f"vidA/00003.jpg,0.5,-0.25,4,{au}",
        f"vidA/00001.jpg,-5,-5,2,{','.join(['-1'] * 12)}",  # expression only
        f"vidA/00002.jpg,-5,-5,-1,{','.join(['-1'] * 12)}",  # nothing: not sampled
        f"vidB_left/00050.jpg,0.1,0.2,-1,{au}",
        f"vidB_left/00051.jpg,0.1,0.2,1,{au}",  # count + 1: dropped
    ]
    path = tmp_path / "train_set.txt"
    path.write_text("\n".join(lines) + "\n")
    ds = WindowDataset(cache, read_mtl_file(path), window=4)
    assert ds.frames.tolist() == [0, 2, 49]
    assert ds.summary()["dropped_past_end"]["total"] == 1
    assert ds.summary()["dropped_unannotated"]["total"] == 1
    first = ds[0]
    assert int(first["expr"]) == 2 and first["va"].tolist() == [-5, -5]
    assert bool((first["au"] == -1).all())
    second = ds[1]
    assert int(second["expr"]) == 4 and second["au"][0] == 1
    np.testing.assert_allclose(second["va"].numpy(), [0.5, -0.25])
    assert int(ds[2]["expr"]) == -1

    # several tracks from uni-task folders: VA for vidA only
    va = np.full((N, 2), 0.5, np.float32)
    va[:3] = -5
    write_video_labels(tmp_path / "VA" / "vidA.txt", VideoLabels.from_values("vidA", VA, va))
    tracks = [expr_labels(tmp_path), read_label_folder(tmp_path / "VA")]
    ds = WindowDataset(cache, tracks, ("speech",), window=4)
    a = ds._video_index == 0
    assert 5 in ds.frames[a] and 6 in ds.frames[a]  # VA labelled there, EXPR not
    i = int(np.flatnonzero(a & (ds.frames == 5))[0])
    assert int(ds[i]["expr"]) == -1 and ds[i]["va"].tolist() == [0.5, 0.5]
    assert ds[0]["va"].tolist() == [-5, -5] and int(ds[0]["expr"]) == 0


def test_loader_workers_same_batches(cache: FeatureCache, tmp_path: Path):
    ds = WindowDataset(cache, expr_labels(tmp_path), window=6)
    for balanced in (None, "expr"):
        runs = []
        for workers in (0, 2):
            loader = make_loader(
                ds, batch_size=16, shuffle=True, balanced=balanced, num_workers=workers, seed=7
            )
            runs.append(list(loader))
        assert len(runs[0]) == len(runs[1]) == 7
        for b0, b2 in zip(*runs, strict=True):
            assert b0["video_id"] == b2["video_id"]
            for k, v in b0.items():
                if isinstance(v, torch.Tensor):
                    assert torch.equal(v, b2[k]), k
        batch = runs[0][0]
        assert batch["frame"].shape == (16,) and batch["mask_clip"].shape == (16, 6)
        assert batch["feat_word"].shape == (16, 6, 3)
    other = list(make_loader(ds, batch_size=16, seed=8))
    # spawned workers get a pickled copy: open memory maps are not part of it
    copy = pickle.loads(pickle.dumps(ds))
    assert copy._arrays == {} and torch.equal(copy[3]["feat_frame"], ds[3]["feat_frame"])
    assert not torch.equal(other[0]["frame"], runs[0][0]["frame"])


def test_read_rows_are_released_every_few_items(cache: FeatureCache, tmp_path: Path, monkeypatch):
    # a pass over a long video must not keep every feature row it read resident
    import mmaffect.training.dataset as dataset_module

    released = []
    monkeypatch.setattr(dataset_module, "RELEASE_EVERY", 10)
    monkeypatch.setattr(dataset_module, "release_pages", lambda arr: released.append(id(arr)))
    ds = WindowDataset(cache, expr_labels(tmp_path), window=6)
    first = [ds[i]["feat_frame"].clone() for i in range(9)]
    assert released == []
    ds[9]
    assert sorted(released) == sorted(id(a) for a in ds._arrays.values()) and released
    for i in range(9):  # rows read again after a release are the same rows
        assert torch.equal(ds[i]["feat_frame"], first[i])


def test_a_batch_read_whole_equals_its_items_collated(cache: FeatureCache, tmp_path: Path):
    # DataLoader reads a batch with __getitems__: one gather per video and modality
    ds = WindowDataset(cache, expr_labels(tmp_path), window=7)
    rng = np.random.default_rng(0)
    for ids in (
        [0, 1, 2],  # the first frames: edges repeated, padding masked
        list(rng.permutation(len(ds))[:40]),  # both videos, NO_FACE among the windows
        [len(ds) - 1, 0, len(ds) - 2],
        list(np.flatnonzero(np.abs(ds.frames - NO_FACE) <= 3)),  # around the faceless frame
    ):
        whole, items = ds.__getitems__(ids), collate([ds[i] for i in ids])
        assert isinstance(whole, dict) and sorted(whole) == sorted(items)
        for k, v in items.items():
            if isinstance(v, torch.Tensor):
                assert whole[k].dtype == v.dtype and torch.equal(whole[k], v), k
            else:
                assert whole[k] == v, k
    assert not whole["has_face"].all() and not whole["mask_frame"].all()
    # a replaced window rule (image sets) is honoured: the items are read one by one
    ds.window_indices = lambda f, n: (np.full(7, f), np.arange(7) == 3)
    items = ds.__getitems__([5, 6])
    assert isinstance(items, list) and torch.equal(items[0]["mask_clip"], torch.arange(7) == 3)


def test_batches_cut_on_the_device_equal_the_loaders(cache: FeatureCache, tmp_path: Path):
    # predict on CUDA copies each video's rows to the GPU once and cuts the windows there
    ds = WindowDataset(cache, expr_labels(tmp_path), window=7)
    cut = list(ds.device_batches(16, "cpu"))
    loaded = list(make_loader(ds, batch_size=16, shuffle=False))
    assert sum(len(b["frame"]) for b in cut) == len(ds)
    merged = {k: torch.cat([b[k] for b in cut]) for k in cut[0] if k != "video_id"}
    for k, v in merged.items():
        whole = torch.cat([b[k] for b in loaded])
        assert v.dtype == whole.dtype and torch.equal(v, whole), k
    assert [v for b in cut for v in b["video_id"]] == [v for b in loaded for v in b["video_id"]]
    assert not merged["mask_frame"].all() and not merged["mask_speech"][:, 0].all()
    ds.window_indices = lambda f, n: (np.full(7, f), np.arange(7) == 3)
    with pytest.raises(TypeError, match="standard windows"):
        next(ds.device_batches(16, "cpu"))
