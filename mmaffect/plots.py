"""Pictures of per-frame predictions: a PNG timeline per video and an MP4 overlay.

* :func:`plot_timeline` draws one PNG with a shared time axis and one lane per head the
  prediction has (expression probabilities, valence/arousal, AU heat map) plus the spoken words.
  Frames without a face, or whose predictions were filled, are shaded grey in every lane.
* :func:`render_overlay` re-encodes the source video with the predictions drawn on each frame.
* Image sets (photos) get contact sheets instead of a timeline (:func:`plot_image_set`: each
  image with its face box and predictions written under it) and, as their overlay, annotated
  copies of the images (:func:`render_image_overlays`).
* :func:`plot_predictions` does both for many ``.npz`` prediction files (``mmaffect plot``),
  one file failing without stopping the others.

matplotlib and OpenCV are imported inside the functions that draw, so ``import mmaffect`` stays
light. See ``docs/plots.md``.
"""

from __future__ import annotations

import subprocess
import tempfile
from collections.abc import Iterable, Sequence
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from mmaffect.errors import InputError, MediaError
from mmaffect.predict.result import VideoPrediction, load_prediction

if TYPE_CHECKING:
    from matplotlib.figure import Figure
    from rich.console import Console

    from mmaffect.batch import BatchReport

__all__ = [
    "BOX_COLOR",
    "EXPR_COLORS",
    "contact_sheet",
    "plot_image_set",
    "plot_predictions",
    "plot_timeline",
    "render_image_overlays",
    "render_overlay",
    "timeline_figure",
]

#: RGB colour of the face box in overlays.
BOX_COLOR = (0, 255, 0)

#: RGB colour of each expression class, the same in the timeline and the overlay.
EXPR_COLORS: dict[str, tuple[int, int, int]] = {
    "Neutral": (150, 150, 150),
    "Anger": (214, 39, 40),
    "Disgust": (140, 86, 75),
    "Fear": (148, 103, 189),
    "Happiness": (255, 187, 0),
    "Sadness": (31, 119, 180),
    "Surprise": (23, 190, 207),
    "Other": (227, 119, 194),
    "Contempt": (188, 189, 34),
}
_SPARE_COLORS = [(44, 160, 44), (255, 127, 14), (127, 127, 127), (31, 119, 180)]

BASELINE_NOTE = "baseline predictor (not a trained model)"

# Timeline drawing: at most this many columns per lane (longer videos are averaged over bins).
_MAX_POINTS = 3000
_FIG_WIDTH_IN = 14.0
_DPI = 100
_NO_FACE_COLOR = "0.55"
_NO_FACE_ALPHA = 0.3


def expr_color(name: str, index: int) -> tuple[int, int, int]:
    """RGB colour of an expression class (by name; unknown names by index)."""
    return EXPR_COLORS.get(name, _SPARE_COLORS[index % len(_SPARE_COLORS)])


def _rgb01(c: tuple[int, int, int]) -> tuple[float, float, float]:
    return (c[0] / 255, c[1] / 255, c[2] / 255)


# ------------------------------------------------------------------------------------ timeline


def _no_face(pred: VideoPrediction) -> np.ndarray:
    return ~np.asarray(pred.face_found, bool) | np.asarray(pred.filled, bool)


def _frame_edges(pred: VideoPrediction) -> np.ndarray:
    """``n + 1`` times: frame ``i`` covers ``[edges[i], edges[i + 1])``."""
    step = 1.0 / pred.fps if pred.fps > 0 else 0.04
    return np.r_[pred.times, pred.times[-1] + step]


def _bin_mean(a: np.ndarray, b: int) -> np.ndarray:
    """Mean over consecutive blocks of ``b`` rows (the last block may be shorter); NaN-aware."""
    if b == 1:
        return a.astype(np.float64)
    n = a.shape[0]
    pad = (-n) % b
    x = np.concatenate([a.astype(np.float64), np.full((pad, *a.shape[1:]), np.nan)])
    x = x.reshape(-1, b, *a.shape[1:])
    with np.errstate(invalid="ignore"):
        cnt = np.sum(~np.isnan(x), axis=1)
        out = np.nansum(x, axis=1) / np.maximum(cnt, 1)
    return np.where(cnt > 0, out, np.nan)


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """``(start, stop)`` frame ranges where ``mask`` is True."""
    if not mask.any():
        return []
    d = np.diff(np.r_[0, mask.astype(np.int8), 0])
    return list(zip(np.flatnonzero(d == 1), np.flatnonzero(d == -1), strict=True))


def _shade_spans(pred: VideoPrediction, min_width: float) -> list[tuple[float, float]]:
    """``(x, width)`` of no-face/filled spans; spans closer than ``min_width`` are merged and
    every span is at least ``min_width`` wide, so that single frames stay visible."""
    edges = _frame_edges(pred)
    spans: list[list[float]] = []
    for a, b in _runs(_no_face(pred)):
        x0, x1 = edges[a], edges[b]
        if spans and x0 - spans[-1][1] < min_width:
            spans[-1][1] = x1
        else:
            spans.append([x0, x1])
    return [(x0, max(x1 - x0, min_width)) for x0, x1 in spans]


def _word_spans(words: Sequence[str]) -> list[tuple[int, int, str]]:
    """Consecutive frames with the same non-empty word merged: ``(start, stop, word)``."""
    spans: list[tuple[int, int, str]] = []
    start = 0
    for i in range(1, len(words) + 1):
        if i == len(words) or words[i] != words[start]:
            if words[start]:
                spans.append((start, i, words[start]))
            start = i
    return spans


def _title(pred: VideoPrediction) -> str:
    predictor = pred.predictor
    if len(predictor) > 70:  # long checkpoint paths: keep the end, which names the run
        predictor = "…" + predictor[-69:]
    seconds = len(pred) / pred.fps if pred.fps > 0 else 0.0
    frames = f"{len(pred)} frame" + ("s" if len(pred) != 1 else "")
    digits = 2 if seconds < 10 else 1
    head = f"{pred.video_id}  ·  {frames} at {pred.fps:g} fps ({seconds:.{digits}f} s)"
    if pred.is_baseline:
        return f"{head}\npredictor: {BASELINE_NOTE}"
    return f"{head}\npredictor: {predictor}"


def timeline_figure(pred: VideoPrediction) -> Figure:
    """The timeline of :func:`plot_timeline` as a matplotlib figure (Agg, not shown).

    Lanes, top to bottom, each present only when the prediction has that head: expression
    probabilities (stacked, one colour per class), valence and arousal on [-1, 1], AU
    activation probabilities (heat map), then the words. Each lane's axes title names it.
    Videos longer than 3,000 frames are drawn from means over equal bins of frames.
    """
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    n = len(pred)
    if n == 0:
        raise InputError(f"{pred.video_id}: the prediction has no frame to plot")
    lanes: list[tuple[str, float]] = []
    if pred.expr_probs is not None:
        lanes.append(("expr", 2.1))
    if pred.va is not None:
        lanes.append(("va", 1.7))
    if pred.au_probs is not None:
        lanes.append(("au", 0.6 + 0.17 * pred.au_probs.shape[1]))
    lanes.append(("words", 0.75))

    top_in, bottom_in, gap_in = 0.95, 0.55, 0.38
    height = top_in + bottom_in + sum(h for _, h in lanes) + gap_in * (len(lanes) - 1)
    fig = Figure(figsize=(_FIG_WIDTH_IN, height), dpi=_DPI)
    left, right = 0.065, 0.855
    gs = fig.add_gridspec(
        len(lanes),
        1,
        height_ratios=[h for _, h in lanes],
        left=left,
        right=right,
        top=1 - top_in / height,
        bottom=bottom_in / height,
        hspace=gap_in / (sum(h for _, h in lanes) / len(lanes)),
    )
    axes = []
    for i in range(len(lanes)):
        axes.append(fig.add_subplot(gs[i], sharex=axes[0] if axes else None))

    edges = _frame_edges(pred)
    b = max(1, -(-n // _MAX_POINTS))
    idx = np.arange(0, n, b)
    x = np.r_[edges[idx], edges[-1]]  # bin starts and the end of the last frame
    span_px = _FIG_WIDTH_IN * _DPI * (right - left)
    duration = float(edges[-1] - edges[0])
    px = duration / span_px  # seconds per pixel
    shade = _shade_spans(pred, min_width=px)

    def steps(values: np.ndarray) -> np.ndarray:  # repeat the last row for the end edge
        return np.concatenate([values, values[-1:]])

    for ax, (lane, _) in zip(axes, lanes, strict=True):
        if lane == "expr":
            probs = _bin_mean(pred.expr_probs, b)
            colors = [_rgb01(expr_color(c, i)) for i, c in enumerate(pred.expr_names)]
            ax.stackplot(
                x,
                steps(np.nan_to_num(probs)).T,
                labels=list(pred.expr_names),
                colors=colors,
                step="post",
                linewidth=0,
            )
            ax.set_ylim(0, 1)
            ax.set_ylabel("probability")
            ax.set_title("expression probabilities (stacked)", loc="left", fontsize=10)
            ax.legend(
                loc="upper left",
                bbox_to_anchor=(1.005, 1.0),
                fontsize=8,
                frameon=False,
                reverse=True,
            )
        elif lane == "va":
            va = _bin_mean(pred.va, b)
            ax.axhline(0, color="0.6", linewidth=0.6)
            ax.plot(
                x, steps(va[:, 0]), drawstyle="steps-post", color="tab:red", lw=1.1, label="valence"
            )
            ax.plot(
                x,
                steps(va[:, 1]),
                drawstyle="steps-post",
                color="tab:blue",
                lw=1.1,
                label="arousal",
            )
            ax.set_ylim(-1.05, 1.05)
            ax.set_yticks([-1, -0.5, 0, 0.5, 1])
            ax.set_ylabel("value")
            ax.set_title("valence & arousal", loc="left", fontsize=10)
            ax.legend(loc="upper left", bbox_to_anchor=(1.005, 1.0), fontsize=8, frameon=False)
        elif lane == "au":
            au = _bin_mean(pred.au_probs, b)
            k = au.shape[1]
            im = ax.imshow(
                au.T,
                aspect="auto",
                interpolation="nearest",
                cmap="viridis",
                vmin=0,
                vmax=1,
                extent=(x[0], x[-1], k - 0.5, -0.5),
                origin="upper",
            )
            ax.set_yticks(range(k))
            ax.set_yticklabels(pred.au_names, fontsize=7)
            ax.set_title("action unit activation probability", loc="left", fontsize=10)
            cax = ax.inset_axes((1.01, 0.0, 0.012, 1.0))
            fig.colorbar(im, cax=cax)
            cax.tick_params(labelsize=7)
        else:
            _draw_words(ax, pred, edges, px)
        if shade:
            ax.broken_barh(
                shade,
                (0, 1),
                transform=ax.get_xaxis_transform(),
                facecolor=_NO_FACE_COLOR,
                alpha=_NO_FACE_ALPHA,
                edgecolor="none",
                zorder=3,
            )
    for ax in axes[:-1]:
        ax.tick_params(labelbottom=False)
    axes[-1].set_xlabel("time (s)")
    axes[0].set_xlim(edges[0], edges[-1])

    fig.suptitle(
        _title(pred),
        x=left,
        y=1 - 0.1 / height,
        ha="left",
        va="top",
        fontsize=11,
        color="firebrick" if pred.is_baseline else "black",
    )
    n_shade = int(_no_face(pred).sum())
    fig.legend(
        handles=[
            Patch(
                facecolor=_NO_FACE_COLOR,
                alpha=_NO_FACE_ALPHA,
                label=f"no face / filled frames ({n_shade} of {n})",
            )
        ],
        loc="upper right",
        bbox_to_anchor=(right, 1 - 0.1 / height),
        fontsize=9,
        frameon=False,
    )
    return fig


def _draw_words(ax, pred: VideoPrediction, edges: np.ndarray, px: float) -> None:
    spans = _word_spans(pred.words)
    ax.set_ylim(0, 1)
    ax.set_yticks([])
    ax.set_title("words", loc="left", fontsize=10)
    if not spans:
        ax.text(
            0.5,
            0.5,
            "no words",
            transform=ax.transAxes,
            ha="center",
            va="center",
            color="0.5",
            fontsize=9,
        )
        return
    bars = [(edges[a], max(edges[b] - edges[a], px)) for a, b, _ in spans]
    colors = ["#dce6f2" if i % 2 == 0 else "#c3d3e8" for i in range(len(spans))]
    ax.broken_barh(bars, (0.15, 0.7), facecolors=colors, edgecolor="#7d93b2", linewidth=0.4)
    # Write a word only where its span is wide enough for it (about 5.5 px per character).
    labelled = 0
    for (_, _, word), (x0, w) in zip(spans, bars, strict=True):
        if w / px < 5.5 * len(word) + 4 or labelled >= 400:
            continue
        ax.text(x0 + w / 2, 0.5, word, ha="center", va="center", fontsize=8, clip_on=True)
        labelled += 1


def plot_timeline(pred: VideoPrediction, path: str | Path) -> Path:
    """Write the timeline PNG of one video's predictions.

    Parameters
    ----------
    pred
        The video's predictions.
    path
        The PNG to write (atomically; folders are made).

    Returns
    -------
    Path
        ``path``.

    The figure is :func:`timeline_figure`: 14 inches wide at 100 dpi (1400 px), its height
    depending on the lanes. The title names the video and the predictor, and says
    "baseline predictor (not a trained model)" for the baseline.
    """
    from mmaffect.atomic import atomic_path

    path = Path(path)
    fig = timeline_figure(pred)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=_DPI)
    return path


# ------------------------------------------------------------------------------------ overlay


class _OverlayPainter:
    """Draws one prediction row onto one RGB frame (in place) with OpenCV."""

    def __init__(self, pred: VideoPrediction, width: int, height: int, trail_frames: int):
        import cv2

        self.cv2 = cv2
        self.pred = pred
        self.trail = max(0, trail_frames)
        self.short = min(width, height)
        self.width, self.height = width, height
        self.scale = max(0.3, self.short / 720)  # font scale: 1.0 at 720p
        self.thick = max(1, round(self.short / 360))
        self.panel = max(40, round(self.short * 0.22))  # VA panel side
        self.font = cv2.FONT_HERSHEY_SIMPLEX
        self.expr_labels = pred.expr_labels

    def _text(self, img, text, org, scale, color, bg=None, anchor="left"):
        cv2 = self.cv2
        th = max(1, round(self.thick * scale / self.scale))
        (tw, tht), base = cv2.getTextSize(text, self.font, scale, th)
        x, y = org
        if anchor == "center":
            x -= tw // 2
        elif anchor == "right":
            x -= tw
        x = int(min(max(0, x), max(0, self.width - tw)))
        y = int(min(max(tht + 2, y), self.height - base - 1))
        if bg is not None:
            pad = max(1, round(3 * self.scale))
            cv2.rectangle(img, (x - pad, y - tht - pad), (x + tw + pad, y + base + pad), bg, -1)
        cv2.putText(img, text, (x, y), self.font, scale, color, th, cv2.LINE_AA)
        return tw, tht + base

    def paint(self, img: np.ndarray, i: int) -> None:
        pred, cv2 = self.pred, self.cv2
        box = pred.face_box[i]
        has_box = bool(pred.face_found[i]) and np.all(np.isfinite(box))
        if has_box:
            x1, y1, x2, y2 = (int(round(float(v))) for v in box)
            cv2.rectangle(img, (x1, y1), (x2, y2), BOX_COLOR, max(2, self.thick + 1))
        if self.expr_labels is not None:
            k = int(self.expr_labels[i])
            name = pred.expr_names[k]
            label = f"{name} {float(pred.expr_probs[i, k]):.2f}"
            if not pred.face_found[i]:
                label += " (no face: filled)" if pred.filled[i] else " (no face)"
            elif pred.filled[i]:
                label += " (filled)"
            color = expr_color(name, k)
            text_color = (0, 0, 0) if sum(color) > 380 else (255, 255, 255)
            if has_box:
                org = (x1, y1 - round(6 * self.scale))
                if y1 - 30 * self.scale < 0:  # no room above the box: write under it
                    org = (x1, y2 + round(28 * self.scale))
                self._text(img, label, org, 0.8 * self.scale, text_color, bg=color)
            else:
                self._text(
                    img,
                    label,
                    (self.width // 2, round(34 * self.scale)),
                    0.8 * self.scale,
                    text_color,
                    bg=color,
                    anchor="center",
                )
        if pred.va is not None:
            self._paint_va(img, i)
        word = pred.words[i]
        if word:
            self._text(
                img,
                word,
                (self.width // 2, self.height - round(18 * self.scale)),
                1.1 * self.scale,
                (255, 255, 255),
                bg=(0, 0, 0),
                anchor="center",
            )
        if pred.is_baseline:
            self._text(
                img,
                "BASELINE",
                (self.width - round(8 * self.scale), round(30 * self.scale)),
                0.7 * self.scale,
                (255, 255, 255),
                bg=(178, 34, 34),
                anchor="right",
            )

    def _paint_va(self, img: np.ndarray, i: int) -> None:
        cv2 = self.cv2
        s = self.panel
        m = max(4, round(8 * self.scale))
        x0, y0 = m, self.height - s - m  # bottom-left corner
        if y0 < 0:
            return
        roi = img[y0 : y0 + s, x0 : x0 + s]
        roi[:] = (roi.astype(np.uint16) * 2 // 5).astype(np.uint8)  # darkened background
        c = (x0 + s // 2, y0 + s // 2)
        r = s // 2 - max(6, round(s * 0.1))
        grey = (170, 170, 170)
        cv2.line(img, (c[0] - r, c[1]), (c[0] + r, c[1]), grey, 1, cv2.LINE_AA)
        cv2.line(img, (c[0], c[1] - r), (c[0], c[1] + r), grey, 1, cv2.LINE_AA)
        cv2.circle(img, c, r, grey, 1, cv2.LINE_AA)
        fs = max(0.25, 0.4 * self.scale)
        self._text(img, "V", (c[0] + r - round(10 * self.scale), c[1] - 3), fs, (220, 220, 220))
        self._text(img, "A", (c[0] + 3, y0 + round(16 * self.scale)), fs, (220, 220, 220))

        def point(j: int) -> tuple[int, int] | None:
            v, a = self.pred.va[j]
            if not (np.isfinite(v) and np.isfinite(a)):
                return None
            v, a = float(np.clip(v, -1, 1)), float(np.clip(a, -1, 1))
            return (round(c[0] + v * r), round(c[1] - a * r))  # arousal up

        prev = None
        for j in range(max(0, i - self.trail), i + 1):
            p = point(j)
            if p is not None and prev is not None:
                cv2.line(img, prev, p, (120, 190, 255), 1, cv2.LINE_AA)
            prev = p
        p = point(i)
        if p is not None:
            cv2.circle(img, p, max(2, round(s * 0.04)), (255, 80, 60), -1, cv2.LINE_AA)


_MP4_AUDIO = {"aac", "mp3", "alac", "opus", "ac3", "eac3", "mp2"}


def render_overlay(
    video: str | Path,
    pred: VideoPrediction,
    out_path: str | Path,
    *,
    chunk_size: int = 32,
    trail_seconds: float = 1.0,
    crf: int = 20,
    preset: str = "veryfast",
) -> Path:
    """Write an MP4 of ``video`` with the predictions of ``pred`` drawn on every frame.

    Each frame shows the face box (:data:`BOX_COLOR`), the predicted expression and its
    probability (beside the box; at the top, marked "no face: filled", without a face), a
    valence-arousal panel in the bottom-left corner (axes, unit circle, the current point and
    a trail over the last ``trail_seconds``), the current word as a subtitle, and "BASELINE" in
    the top-right corner for the baseline predictor.

    The output is H.264 yuv420p at the source's frame rate with the source's first audio
    track (copied when MP4 can hold it, otherwise re-encoded to AAC; cut at the video's end, left
    as it is when shorter).
    Frames are decoded with :func:`~mmaffect.media.iter_frames`, drawn and piped to ffmpeg
    one chunk at a time, so memory does not grow with the video's length.

    Frame count: the output has exactly ``len(pred)`` frames; prediction row ``i`` is drawn on
    decoded frame ``i``. When the source has more frames than the prediction, the extra ones
    are left out; when it has fewer (e.g. the ``opencv+1`` frame-count rule), its last frame is
    repeated for the remaining rows. The output runs at the source's rate even where
    ``pred.fps`` says otherwise (row ``i`` always goes with decoded frame ``i``).

    Raises
    ------
    MediaError
        The source cannot be decoded, or ffmpeg fails to encode.
    InputError
        The source video does not exist or the prediction is empty.
    """
    from mmaffect.atomic import atomic_path
    from mmaffect.media import ffmpeg
    from mmaffect.media.frames import iter_frames
    from mmaffect.media.probe import probe

    video, out_path = Path(video), Path(out_path)
    if not video.is_file():
        raise InputError(f"{pred.video_id}: source video {video} does not exist")
    n = len(pred)
    if n == 0:
        raise InputError(f"{pred.video_id}: the prediction has no frame to draw")
    info = probe(video)
    vs = info.require_video()
    fps = Fraction(vs.fps).limit_denominator(1_000_000)
    width, height = vs.width, vs.height
    painter = _OverlayPainter(pred, width, height, round(trail_seconds * float(fps)))

    audio = info.audio[0] if info.audio else None
    args = ffmpeg.quiet_command(
        "-y", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}",
        "-r", f"{fps.numerator}/{fps.denominator}", "-i", "pipe:0",
    )  # fmt: skip
    if audio is not None:
        # The audio is cut at the video's end (an input limit: `-shortest` would cut the video
        # instead when the audio is the shorter one).
        seconds = f"{n / float(fps):.6f}"
        args += ["-t", seconds, "-i", str(video), "-map", "0:v:0", "-map", "1:a:0"]
        args += ["-c:a", "copy"] if audio.codec in _MP4_AUDIO else ["-c:a", "aac", "-b:a", "160k"]
    args += [
        "-vf",
        "pad=ceil(iw/2)*2:ceil(ih/2)*2",  # yuv420p needs even sides
        "-c:v",
        "libx264",
        "-preset",
        preset,
        "-crf",
        str(crf),
        "-pix_fmt",
        "yuv420p",
        "-movflags",
        "+faststart",
        "-f",
        "mp4",
    ]

    with atomic_path(out_path) as tmp, tempfile.TemporaryFile() as errfile:
        proc = subprocess.Popen(
            [*args, str(tmp)], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=errfile
        )
        written = 0
        last: np.ndarray | None = None
        frames = iter_frames(video, chunk_size=chunk_size, info=info)
        try:
            try:
                for chunk in frames:
                    take = min(len(chunk), n - written)
                    images = np.array(chunk.images[:take])  # writable copy
                    for j in range(take):
                        painter.paint(images[j], written + j)
                    proc.stdin.write(images.tobytes())
                    written += take
                    if take:
                        last = np.array(chunk.images[take - 1])
                    if written >= n:
                        break
            finally:
                frames.close()  # stops the decoder when the source is longer
            if last is None:
                raise MediaError(f"{video.name}: no frame could be decoded")
            while written < n:  # source shorter than the prediction: hold its last frame
                image = last.copy()
                painter.paint(image, written)
                proc.stdin.write(image.tobytes())
                written += 1
            proc.stdin.close()
            code = proc.wait()
        except BrokenPipeError:
            code = proc.wait()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        if code != 0:
            errfile.seek(0)
            text = errfile.read().decode("utf-8", "replace")
            raise MediaError(
                f"ffmpeg failed while encoding the overlay of {video.name}: "
                f"{ffmpeg.stderr_reason(text)}",
                detail=text,
            )
    return out_path


# ------------------------------------------------------------------------------------ image sets

#: Contact sheets of an image set: this many columns and rows of images per sheet.
SHEET_COLUMNS, SHEET_ROWS = 8, 6
_CELL = 240  # side of the square a thumbnail is fitted into, in pixels
_CAPTION = 70  # caption lines under a thumbnail
_SHEET_HEAD = 48  # title lines at the top of a sheet
_SHEET_BG = (24, 24, 24)


def _put(canvas: np.ndarray, text: str, org: tuple[int, int], scale: float, color, width: int):
    """Write ``text`` at ``org`` in OpenCV's Hershey font (ASCII only: other characters become
    "?"), cut to about ``width`` pixels."""
    import cv2

    text = text.encode("ascii", "replace").decode()
    fits = max(4, int(width / (19 * scale)))
    text = text if len(text) <= fits else text[: fits - 2] + ".."
    cv2.putText(canvas, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, color, 1, cv2.LINE_AA)


def _caption(pred: VideoPrediction, i: int) -> list[tuple[str, tuple[int, int, int]]]:
    """The lines under image ``i``: its file, its expression (or "no face"), VA, active AUs."""
    lines = [(pred.meta["images"][i], (235, 235, 235))]
    if not pred.face_found[i]:
        return [*lines, ("no face", (150, 150, 150))]
    if pred.expr_probs is not None:
        k = int(pred.expr_labels[i])
        name = pred.expr_names[k]
        lines.append((f"{name} {float(pred.expr_probs[i, k]):.2f}", expr_color(name, k)))
    if pred.va is not None:
        v, a = (float(x) for x in pred.va[i])
        lines.append((f"V {v:+.2f}  A {a:+.2f}", (235, 235, 235)))
    if pred.au_probs is not None:
        active = [n for n, on in zip(pred.au_names, pred.au_labels[i], strict=True) if on]
        aus = "AU " + " ".join(a.removeprefix("AU") for a in active) if active else "no AU"
        lines.append((aus, (200, 200, 200)))
    return lines


def _sheet_cell(canvas: np.ndarray, x0: int, y0: int, pred: VideoPrediction, i: int, path: Path):
    """Draw image ``i`` (fitted into the cell, face box in green) and its caption."""
    import cv2

    from mmaffect.media.image_set import read_image, upright_size

    side = _CELL - 8
    try:
        width, height = upright_size(path)
        scale = side / max(width, height)
        tw, th = max(1, round(width * scale)), max(1, round(height * scale))
        ox, oy = x0 + 4 + (side - tw) // 2, y0 + 4 + (side - th) // 2
        canvas[oy : oy + th, ox : ox + tw] = read_image(path, (tw, th))
        box = pred.face_box[i]
        if pred.face_found[i] and np.all(np.isfinite(box)):
            x1, y1, x2, y2 = (int(round(float(v) * scale)) for v in box)
            cv2.rectangle(canvas, (ox + x1, oy + y1), (ox + x2, oy + y2), BOX_COLOR, 2)
        lines = _caption(pred, i)
    except Exception as e:  # noqa: BLE001 - one unreadable image must not lose the sheet
        lines = [(pred.meta["images"][i], (235, 235, 235)), (f"cannot read: {e}", (230, 80, 80))]
    for k, (text, color) in enumerate(lines[:4]):
        _put(canvas, text, (x0 + 6, y0 + _CELL + 14 + 16 * k), 0.42, color, _CELL - 10)


def contact_sheet(pred: VideoPrediction, folder: str | Path, rows: range) -> np.ndarray:
    """An RGB contact sheet of the images ``rows`` of an image set's prediction: each image
    with its face box and, under it, its file name, expression and probability, valence and
    arousal and active AUs ("no face" without one); the title names the set, the images shown,
    how many have a face, and the predictor."""
    cols = min(SHEET_COLUMNS, len(rows))
    lines = -(-len(rows) // cols)
    canvas = np.empty((_SHEET_HEAD + lines * (_CELL + _CAPTION), cols * _CELL, 3), np.uint8)
    canvas[:] = _SHEET_BG
    n, faces = len(pred), int(np.asarray(pred.face_found).sum())
    head = f"{pred.video_id}: images {rows.start + 1}-{rows.stop} of {n}, a face in {faces}"
    _put(canvas, head, (8, 20), 0.55, (235, 235, 235), canvas.shape[1] - 16)
    who = BASELINE_NOTE if pred.is_baseline else pred.predictor
    color = (230, 60, 60) if pred.is_baseline else (200, 200, 200)
    _put(canvas, f"predictor: {who}", (8, 40), 0.5, color, canvas.shape[1] - 16)
    for k, i in enumerate(rows):
        x0, y0 = (k % cols) * _CELL, _SHEET_HEAD + (k // cols) * (_CELL + _CAPTION)
        _sheet_cell(canvas, x0, y0, pred, i, Path(folder) / pred.meta["images"][i])
    return canvas


def plot_image_set(pred: VideoPrediction, folder: str | Path, out_dir: str | Path) -> list[Path]:
    """Write the contact sheets of an image set (:func:`contact_sheet`, 48 images each):
    ``<set>.png``, or ``<set>-p1.png``, ``<set>-p2.png``, … when the set needs several."""
    from PIL import Image

    from mmaffect.atomic import atomic_path

    per = SHEET_COLUMNS * SHEET_ROWS
    starts = range(0, len(pred), per)
    paths = []
    for page, start in enumerate(starts, 1):
        name = pred.video_id + (f"-p{page}" if len(starts) > 1 else "")
        sheet = contact_sheet(pred, folder, range(start, min(start + per, len(pred))))
        path = Path(out_dir) / f"{name}.png"
        with atomic_path(path) as tmp:
            Image.fromarray(sheet).save(tmp, format="PNG")
        paths.append(path)
    return paths


def render_image_overlays(pred: VideoPrediction, folder: str | Path, out_dir: str | Path) -> Path:
    """Each image of an image set, upright and at full size, with the predictions drawn on as
    in the overlay video (face box, expression, VA panel, "BASELINE"), as
    ``out_dir/<image stem>.jpg``; returns ``out_dir``."""
    from PIL import Image

    from mmaffect.atomic import atomic_path
    from mmaffect.media.image_set import read_image

    out_dir = Path(out_dir)
    for i, name in enumerate(pred.meta["images"]):
        image = np.array(read_image(Path(folder) / name))
        _OverlayPainter(pred, image.shape[1], image.shape[0], trail_frames=0).paint(image, i)
        with atomic_path(out_dir / f"{Path(name).stem}.jpg") as tmp:
            Image.fromarray(image).save(tmp, format="JPEG", quality=90)
    return out_dir


def _image_folder(pred: VideoPrediction, videos: Path | None) -> Path:
    """Where an image set's images are: ``videos/<set>``, ``videos``, or the recorded folder."""
    candidates = [videos / pred.video_id, videos] if videos is not None else []
    if pred.meta.get("source"):
        candidates.append(Path(pred.meta["source"]))
    names = pred.meta["images"][:20]
    for folder in candidates:
        if any((folder / name).is_file() for name in names):
            return folder
    recorded = pred.meta.get("source") or "no folder recorded"
    raise InputError(
        f"{pred.video_id}: the images of this set are not found ({recorded}; "
        + (f"not in {videos})" if videos is not None else "no --videos folder given)"),
        hint="pass --videos DIR, the folder holding the images",
    )


# ------------------------------------------------------------------------------------ batch


def _prediction_files(paths_or_folder: str | Path | Iterable[str | Path]) -> list[Path]:
    if isinstance(paths_or_folder, (str, Path)):
        paths_or_folder = [paths_or_folder]
    items: list[Path] = []
    for p in map(Path, paths_or_folder):
        if p.is_dir():
            found = sorted(p.glob("*.npz"))
            items += found or [p]  # an empty folder stays an item, which then fails
        else:
            items.append(p)
    return items


def _video_index(videos: Path) -> dict[str, Path]:
    from mmaffect.media import VIDEO_EXTENSIONS

    index: dict[str, Path] = {}
    for p in sorted(videos.rglob("*")):
        if p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS:
            index.setdefault(p.stem, p)
    return index


def _find_source(pred: VideoPrediction, index: dict[str, Path] | None, videos) -> Path:
    """The source video: by id in the ``videos`` folder first, then ``meta["source"]``."""
    vid = pred.video_id
    if index is not None:
        for key in (vid, vid.removesuffix("_left").removesuffix("_right")):
            if key in index:
                return index[key]
    source = pred.meta.get("source")
    if source and Path(source).is_file():
        return Path(source)
    where = f"not in {videos}" if videos is not None else "no --videos folder given"
    recorded = f"recorded source {source} does not exist" if source else "no source recorded"
    raise InputError(
        f"{vid}: source video not found for the overlay ({recorded}; {where})",
        hint=f"pass --videos DIR, a folder holding {vid}.mp4 (or another video extension)",
    )


def plot_predictions(
    paths_or_folder: str | Path | Iterable[str | Path],
    out_dir: str | Path,
    *,
    overlay: bool = False,
    videos: str | Path | None = None,
    console: Console | None = None,
    debug: bool = False,
) -> BatchReport:
    """Timeline PNGs (and overlays) for many saved predictions; one failure stops nothing.

    Parameters
    ----------
    paths_or_folder
        ``.npz`` files written by :func:`~mmaffect.predict.save_prediction`, or folders of them.
    out_dir
        Gets ``<video_id>.png`` and, with ``overlay``, ``<video_id>_overlay.mp4``.
    overlay
        Also render :func:`render_overlay`.
    videos
        Folder (searched recursively) holding the source videos by id (``_left``/``_right``
        stripped when needed); without it, or when the id is not there, the path recorded in
        the prediction (``meta["source"]``) is used.
    console, debug
        Where progress and failures are printed; ``debug`` prints tracebacks.

    Returns
    -------
    BatchReport
        One item per input file; ``exit_code`` is 1 when any failed.
    """
    from mmaffect.batch import run_batch

    out_dir = Path(out_dir)
    videos = Path(videos) if videos is not None else None
    if videos is not None and not videos.is_dir():
        raise InputError(f"--videos {videos} is not a folder")
    index = _video_index(videos) if overlay and videos is not None else None

    def work(path: Path) -> str:
        if path.is_dir():
            raise InputError(f"{path}: no .npz prediction files in this folder")
        if not path.is_file():
            raise InputError(f"{path} does not exist")
        pred = load_prediction(path)
        if "images" in pred.meta:  # an image set: contact sheets, not a timeline
            folder = _image_folder(pred, videos)
            sheets = plot_image_set(pred, folder, out_dir)
            more = f" (+{len(sheets) - 1} more sheets)" if len(sheets) > 1 else ""
            written = [sheets[0].name + more]
            if overlay:
                written.append(f"{render_image_overlays(pred, folder, out_dir / pred.video_id)}/")
            return ", ".join(written)
        written = [plot_timeline(pred, out_dir / f"{pred.video_id}.png").name]
        if overlay:
            source = _find_source(pred, index, videos)
            mp4 = render_overlay(source, pred, out_dir / f"{pred.video_id}_overlay.mp4")
            written.append(mp4.name)
        return ", ".join(written)

    return run_batch(
        _prediction_files(paths_or_folder),
        work,
        name=str,
        console=console,
        debug=debug,
        title="plot summary",
    )
