"""Timeline PNGs, overlay MP4s and ``mmaffect plot`` on synthetic predictions and media."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from conftest import run_ffmpeg
from typer.testing import CliRunner

from mmaffect.errors import InputError
from mmaffect.plots import (
    BASELINE_NOTE,
    BOX_COLOR,
    _word_spans,
    plot_predictions,
    plot_timeline,
    render_overlay,
    timeline_figure,
)
from mmaffect.predict.result import VideoPrediction, save_prediction

FPS = 10.0
BOX = (60.0, 20.0, 130.0, 90.0)  # inside a 160x120 frame, clear of the VA panel (bottom left)


def make_pred(
    n: int = 40,
    *,
    video_id: str = "clip",
    fps: float = FPS,
    face_until: int | None = None,
    predictor: str = "baseline",
    heads: tuple[str, ...] = ("expr", "va", "au"),
    seed: int = 0,
) -> VideoPrediction:
    """A prediction with smooth random heads, a face in frames ``< face_until`` and words."""
    rng = np.random.default_rng(seed)
    logits = np.cumsum(rng.normal(0, 0.3, (n, 8)), axis=0)
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    t = np.arange(n) / fps
    va = np.stack([np.sin(t), 0.5 * np.cos(t)], axis=1)
    au = rng.uniform(0, 1, (n, 12))
    face = np.arange(n) < (n if face_until is None else face_until)
    box = np.where(face[:, None], np.array(BOX), np.nan)
    words = [("hello" if i < n // 2 else "world") if i % 10 < 7 else "" for i in range(n)]
    return VideoPrediction(
        video_id=video_id,
        fps=fps,
        times=t,
        expr_probs=probs.astype(np.float32) if "expr" in heads else None,
        va=va.astype(np.float32) if "va" in heads else None,
        au_probs=au.astype(np.float32) if "au" in heads else None,
        face_found=face,
        face_score=face.astype(np.float32),
        face_box=box.astype(np.float32),
        words=words,
        filled=~face,
        predictor=predictor,
    )


def render(fig) -> np.ndarray:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def lane_axes(fig, word: str):
    found = [ax for ax in fig.axes if word in ax.get_title(loc="left")]
    assert len(found) == 1, [ax.get_title(loc="left") for ax in fig.axes]
    return found[0]


def inside(ys, xs, ax, height: int, pad: int = 2) -> bool:
    """All pixel coordinates within the axes' box (display y counts from the bottom)."""
    bb = ax.get_window_extent()
    top, bottom = height - bb.y1, height - bb.y0
    return bool(
        np.all((xs >= bb.x0 - pad) & (xs <= bb.x1 + pad) & (ys >= top - pad) & (ys <= bottom + pad))
    )


@pytest.fixture
def gray_video(tmp_path: Path) -> Path:
    """1 s, 10 fps, 160x120 mid-grey H.264 clip with a sine tone (AAC)."""
    path = tmp_path / "clip.mp4"
    run_ffmpeg(
        "-f", "lavfi", "-i", "color=c=0x808080:size=160x120:rate=10:duration=1",
        "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100:duration=1",
        "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac", str(path),
    )  # fmt: skip
    return path


def decode(path: Path) -> tuple[list[np.ndarray], float, bool]:
    import av

    with av.open(str(path)) as c:
        stream = c.streams.video[0]
        rate = float(stream.average_rate)
        has_audio = bool(c.streams.audio)
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(stream)]
    return frames, rate, has_audio


def is_box_color(px: np.ndarray) -> np.ndarray:
    px = px.astype(int)
    g = BOX_COLOR[1]
    return (px[..., 1] > g - 80) & (px[..., 0] < 110) & (px[..., 2] < 110)


# ------------------------------------------------------------------------------------ timeline


def test_timeline_png_size_and_lanes(tmp_path: Path):
    from PIL import Image

    pred = make_pred()
    fig = timeline_figure(pred)
    titles = [ax.get_title(loc="left") for ax in fig.axes if ax.get_title(loc="left")]
    assert titles == [
        "expression probabilities (stacked)",
        "valence & arousal",
        "action unit activation probability",
        "words",
    ]
    assert fig.axes[-1].get_xlabel() == "time (s)" or any(
        ax.get_xlabel() == "time (s)" for ax in fig.axes
    )
    legend_texts = [t.get_text() for leg in fig.legends for t in leg.get_texts()]
    assert any("no face / filled" in t for t in legend_texts)
    expr_legend = [t.get_text() for t in lane_axes(fig, "expression").get_legend().get_texts()]
    assert set(expr_legend) == set(pred.expr_names)
    au_ticks = [t.get_text() for t in lane_axes(fig, "action unit").get_yticklabels()]
    assert au_ticks == list(pred.au_names)

    out = plot_timeline(pred, tmp_path / "sub" / "clip.png")
    assert out == tmp_path / "sub" / "clip.png" and out.is_file()
    w, h = (fig.get_size_inches() * fig.dpi).round().astype(int)
    with Image.open(out) as im:
        assert im.format == "PNG"
        assert im.size == (w, h) == (1400, h)
    assert not list((tmp_path / "sub").glob(".*.tmp"))  # atomic write left nothing behind


def test_timeline_title_says_baseline_or_checkpoint():
    base = timeline_figure(make_pred(video_id="vid_7"))
    title = base._suptitle.get_text()
    assert "vid_7" in title and BASELINE_NOTE in title
    assert BASELINE_NOTE == "baseline predictor (not a trained model)"

    ckpt = timeline_figure(make_pred(video_id="vid_7", predictor="runs/a/best.ckpt"))
    title = ckpt._suptitle.get_text()
    assert "runs/a/best.ckpt" in title and "baseline" not in title


def test_timeline_leaves_out_missing_heads():
    fig = timeline_figure(make_pred(heads=("va",)))
    titles = [ax.get_title(loc="left") for ax in fig.axes if ax.get_title(loc="left")]
    assert titles == ["valence & arousal", "words"]
    assert fig.get_size_inches()[1] < timeline_figure(make_pred()).get_size_inches()[1]


def test_valence_change_shows_only_in_the_va_lane():
    a = make_pred()
    b = make_pred()
    b.va = b.va.copy()
    b.va[:, 0] = -b.va[:, 0]
    fig_a, fig_b = timeline_figure(a), timeline_figure(b)
    pa, pb = render(fig_a), render(fig_b)
    assert pa.shape == pb.shape
    ys, xs = np.nonzero(np.any(pa != pb, axis=2))
    assert len(ys) > 100
    assert inside(ys, xs, lane_axes(fig_a, "valence"), pa.shape[0])


def test_no_face_frames_are_shaded_in_every_lane():
    with_face, without = make_pred(), make_pred(face_until=20)
    fig_a, fig_b = timeline_figure(with_face), timeline_figure(without)
    pa, pb = render(fig_a), render(fig_b)
    diff = np.any(pa != pb, axis=2)
    h = pa.shape[0]
    for ax in fig_a.axes:
        title = ax.get_title(loc="left")
        if not title:
            continue  # the AU colour bar
        bb = ax.get_window_extent()
        x0, x1 = int(bb.x0) + 2, int(bb.x1) - 2
        y0, y1 = int(h - bb.y1) + 2, int(h - bb.y0) - 2
        mid = (x0 + x1) // 2
        # Frames 20-39 (right half) are shaded; the left half is untouched.
        assert diff[y0:y1, mid + 5 : x1].any(), title
        assert not diff[y0:y1, x0 : mid - 5].any(), title
    legend = [t.get_text() for leg in fig_b.legends for t in leg.get_texts()]
    assert legend == ["no face / filled frames (20 of 40)"]


def test_word_spans_merge_consecutive_frames():
    words = ["", "hi", "hi", "", "yo", "yo", "yo", "hi"]
    assert _word_spans(words) == [(1, 3, "hi"), (4, 7, "yo"), (7, 8, "hi")]
    assert _word_spans(["", ""]) == []
    fig = timeline_figure(make_pred())
    texts = [t.get_text() for t in lane_axes(fig, "words").texts]
    # 4 spans of 7 frames each: 2 of "hello" then 2 of "world", each written once.
    assert texts == ["hello", "hello", "world", "world"]


def test_timeline_of_one_frame(tmp_path: Path):
    pred = make_pred(1)
    out = plot_timeline(pred, tmp_path / "one.png")
    assert out.stat().st_size > 1000
    assert "1 frame " in timeline_figure(pred)._suptitle.get_text()


def test_timeline_of_a_30_minute_video_is_fast(tmp_path: Path):
    pred = make_pred(54_000, fps=30.0, face_until=40_000)
    start = time.perf_counter()
    plot_timeline(pred, tmp_path / "long.png")
    assert time.perf_counter() - start < 8.0
    assert (tmp_path / "long.png").stat().st_size > 10_000


def test_empty_prediction_is_refused(tmp_path: Path):
    with pytest.raises(InputError, match="no frame to plot"):
        plot_timeline(make_pred(0), tmp_path / "x.png")


# ------------------------------------------------------------------------------------ overlay


def box_band(shape: tuple[int, ...], box, width: int) -> np.ndarray:
    """True within ``width`` pixels of the outline of ``box`` (x1, y1, x2, y2)."""
    x1, y1, x2, y2 = box
    rows, cols = np.mgrid[: shape[0], : shape[1]]
    in_x = (cols >= x1 - width) & (cols <= x2 + width)
    in_y = (rows >= y1 - width) & (rows <= y2 + width)
    near_x = (np.abs(cols - x1) <= width) | (np.abs(cols - x2) <= width)
    near_y = (np.abs(rows - y1) <= width) | (np.abs(rows - y2) <= width)
    return (near_x & in_y) | (near_y & in_x)


def test_overlay_frames_fps_audio_and_box(tmp_path: Path, gray_video: Path):
    pred = make_pred(10, face_until=5)
    out = render_overlay(gray_video, pred, tmp_path / "o.mp4")
    frames, rate, has_audio = decode(out)
    assert len(frames) == 10
    assert rate == pytest.approx(FPS)
    assert has_audio
    assert frames[0].shape == (120, 160, 3)
    # The box is drawn where the face is and nowhere else. The expression label sits on the
    # box's top edge (its size is the font's business), so only the outline below the middle of
    # the box must be whole; no label colour is box green.
    x1, y1, x2, y2 = BOX
    line = box_band(frames[0].shape, BOX, 0)
    lower = line & (np.mgrid[:120, :160][0] >= (y1 + y2) / 2)
    near = box_band(frames[0].shape, BOX, 4)
    for i in range(10):
        green = is_box_color(frames[i])
        if i < 5:
            assert green[lower].all() and not green[~near].any(), i
        else:
            assert not green.any(), i
    # The drawing is on the frame: the mid-grey source is not what comes out.
    assert np.abs(frames[0].astype(int) - 128).max() > 100


def test_overlay_box_outline_is_whole_without_labels(tmp_path: Path, gray_video: Path):
    # No expression head and a trained predictor (no BASELINE tag): no text near the box, so
    # all four sides of the outline are whole.
    pred = make_pred(10, face_until=5, heads=("va", "au"), predictor="runs/va/best.ckpt")
    frames, _, _ = decode(render_overlay(gray_video, pred, tmp_path / "o.mp4"))
    line, near = box_band(frames[0].shape, BOX, 0), box_band(frames[0].shape, BOX, 4)
    for i in range(10):
        green = is_box_color(frames[i])
        if i < 5:
            assert green[line].all() and not green[~near].any(), i
        else:
            assert not green.any(), i


def test_overlay_frame_count_follows_the_prediction(tmp_path: Path, gray_video: Path):
    longer = render_overlay(gray_video, make_pred(13), tmp_path / "long.mp4")
    shorter = render_overlay(gray_video, make_pred(6), tmp_path / "short.mp4")
    assert len(decode(longer)[0]) == 13
    assert len(decode(shorter)[0]) == 6


def test_overlay_of_a_missing_video_says_so(tmp_path: Path):
    with pytest.raises(InputError, match="source video .*nope.mp4 does not exist"):
        render_overlay(tmp_path / "nope.mp4", make_pred(5), tmp_path / "o.mp4")
    assert not (tmp_path / "o.mp4").exists()


# ------------------------------------------------------------------------------------ batch + CLI


def saved(tmp_path: Path, pred: VideoPrediction, source: Path | None = None) -> Path:
    if source is not None:
        pred.meta["source"] = str(source)
    return save_prediction(pred, tmp_path / "preds" / f"{pred.video_id}.npz")


def test_batch_goes_on_after_bad_files(tmp_path: Path, gray_video: Path):
    good = saved(tmp_path, make_pred(10, video_id="good"), gray_video)
    lost = saved(tmp_path, make_pred(10, video_id="lost"), tmp_path / "moved.mp4")
    broken = tmp_path / "preds" / "broken.npz"
    broken.write_bytes(b"not a zip file")
    out = tmp_path / "plots"
    report = plot_predictions([broken, lost, good], out, overlay=True)
    assert report.exit_code == 1
    assert [r.name for r in report.ok] == [str(good)]
    failed = {Path(r.name).name: r.message for r in report.failed}
    assert "not a mmaffect prediction file" in failed["broken.npz"]
    assert "lost: source video not found for the overlay" in failed["lost.npz"]
    assert "moved.mp4 does not exist" in failed["lost.npz"] and "--videos" in failed["lost.npz"]
    assert (out / "good.png").is_file() and (out / "good_overlay.mp4").is_file()
    assert (out / "lost.png").is_file()  # the timeline does not need the video
    assert not (out / "lost_overlay.mp4").exists()


def test_videos_folder_finds_the_source_by_id(tmp_path: Path, gray_video: Path):
    videos = tmp_path / "videos"
    videos.mkdir()
    gray_video.rename(videos / "clip.mp4")
    npz = saved(tmp_path, make_pred(10, video_id="clip_left"))  # no source recorded
    report = plot_predictions(tmp_path / "preds", tmp_path / "plots", overlay=True, videos=videos)
    assert report.exit_code == 0, report.failed
    assert len(decode(tmp_path / "plots" / "clip_left_overlay.mp4")[0]) == 10
    assert report.ok[0].name == str(npz)


def test_cli_plot(tmp_path: Path):
    from mmaffect.cli.app import app

    saved(tmp_path, make_pred(20, video_id="a"))
    saved(tmp_path, make_pred(20, video_id="b", predictor="ckpt/best.ckpt"))
    runner = CliRunner()
    res = runner.invoke(app, ["plot", str(tmp_path / "preds"), "--out", str(tmp_path / "p")])
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in (tmp_path / "p").iterdir()) == ["a.png", "b.png"]
    assert "2 ok" in res.output and "a.png" in res.output

    (tmp_path / "bad.npz").write_text("x")
    res = runner.invoke(
        app, ["plot", str(tmp_path / "bad.npz"), str(tmp_path / "preds" / "a.npz"), "-o",
              str(tmp_path / "q")],
    )  # fmt: skip
    assert res.exit_code == 1
    text = " ".join(res.output.split())  # rich wraps at the runner's 80 columns
    assert "1 ok, 0 skipped, 1 failed" in text and "not a mmaffect prediction file" in text
    assert (tmp_path / "q" / "a.png").is_file()

    res = runner.invoke(app, ["plot", str(tmp_path / "empty_dir_missing"), "-o", str(tmp_path)])
    assert res.exit_code == 1 and "does not exist" in " ".join(res.output.split())
