#!/usr/bin/env python3
"""Generate the small sample clips shipped in ``sample_media/``.

Run from the repository root::

    python sample_media/make_samples.py

Requirements (nothing is downloaded):

* Python packages: numpy, pillow, scikit-image (the source pictures come from
  ``skimage.data``) and, only if there is no ``ffmpeg`` on PATH, imageio-ffmpeg
  (for its bundled static ffmpeg binary).
* ``espeak-ng`` on PATH (Debian/Ubuntu: ``apt-get install espeak-ng``).
* An ffmpeg build with libx264 and the native ``aac`` encoder.

Outputs (written next to this script, overwritten if present):

* ``astronaut_talking.mp4``        6.0 s, 480x480, 25 fps, H.264 + AAC speech
* ``astronaut_silent_noaudio.mp4`` 3.0 s, 480x480, 25 fps, H.264, no audio stream
* ``no_face.mp4``                  3.0 s, 640x480, 25 fps, H.264 + AAC speech, no face
* ``speech_only.wav``              3.0 s, 16 kHz mono PCM s16le speech
* ``frames/0-25-480x480/NNNNN.jpg`` Aff-Wild2 / ABAW style 112x112 face crops of
  the first 50 frames of ``astronaut_talking.mp4`` with 00020-00024 missing

Everything is deterministic: there is no randomness at all (all motion is a
fixed function of the frame index), x264 runs single-threaded and the
containers are written with the bit-exact flags, so the same espeak-ng and
ffmpeg versions give byte-identical files.
"""

from __future__ import annotations

import math
import shutil
import subprocess
import sys
import tempfile
import wave
from pathlib import Path

import numpy as np
from PIL import Image

OUT_DIR = Path(__file__).resolve().parent
FPS = 25

# Sentences, voice and speaking rate for espeak-ng.
VOICE = "en-us"
WPM = 150
SENTENCE_TALKING = "Hello, I am very happy to be here today."
SENTENCE_NO_FACE = "This is just a cup of coffee."
SENTENCE_SPEECH_ONLY = "I feel a little nervous, but I am okay."

# Audio layout: speech starts at LEAD_S (WAV_LEAD_S in speech_only.wav); the
# rest of the clip is silence.
LEAD_S = 0.5
WAV_LEAD_S = 0.2
MP4_AUDIO_RATE = 48000  # AAC frame = 1024 samples = 21.3 ms (< one 40 ms video frame)
MP4_AUDIO_BITRATE = "48k"
WAV_RATE = 16000
MIN_TAIL_S = 0.25  # the speech must end at least this long before the clip ends

# Video encoding.
CRF = 28
X264 = [
    "-c:v",
    "libx264",
    "-preset",
    "slow",
    "-crf",
    str(CRF),
    "-pix_fmt",
    "yuv420p",
    "-profile:v",
    "high",
    "-threads",
    "1",
    "-g",
    "50",
]

# Face box of Eileen Collins in skimage.data.astronaut() (row, col, height, width),
# as found by skimage.feature.Cascade with the bundled LBP frontal-face cascade.
ASTRO_FACE_RC = (66 + 48, 174 + 48)  # centre (row, col)
ASTRO_FACE_SIZE = 96

# Aff-Wild2 style frame folder.
CROP_SIZE = 112
CROP_FRAMES = 50  # 2 s at 25 fps
CROP_MISSING = range(20, 25)  # 1-based frame numbers deliberately left out
CROP_SCALE = 1.4  # crop side = CROP_SCALE * cascade face box side (tight, like ABAW)


# --------------------------------------------------------------------------- tools
def find_ffmpeg() -> str:
    exe = shutil.which("ffmpeg")
    if exe:
        return exe
    try:
        import imageio_ffmpeg
    except ImportError:
        sys.exit("ffmpeg not found: put it on PATH or `pip install imageio-ffmpeg`")
    return imageio_ffmpeg.get_ffmpeg_exe()


def find_espeak() -> str:
    exe = shutil.which("espeak-ng")
    if not exe:
        sys.exit("espeak-ng not found on PATH (Debian/Ubuntu: apt-get install espeak-ng)")
    return exe


FFMPEG = find_ffmpeg()
ESPEAK = find_espeak()
BITEXACT = [
    "-map_metadata",
    "-1",
    "-fflags",
    "+bitexact",
    "-flags:v",
    "+bitexact",
    "-flags:a",
    "+bitexact",
]


def run(cmd: list[str], stdin: bytes | None = None) -> None:
    proc = subprocess.run(cmd, input=stdin, capture_output=True)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr.decode(errors="replace"))
        raise SystemExit(f"command failed ({proc.returncode}): {' '.join(cmd[:6])} ...")


# --------------------------------------------------------------------------- audio
def read_wav(path: Path) -> tuple[np.ndarray, int]:
    with wave.open(str(path), "rb") as w:
        assert w.getsampwidth() == 2 and w.getnchannels() == 1, "expected 16-bit mono"
        rate = w.getframerate()
        data = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    return data.astype(np.float32) / 32768.0, rate


def write_wav(path: Path, x: np.ndarray, rate: int) -> None:
    pcm = np.clip(np.round(x * 32767.0), -32768, 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())


def speech(text: str, rate: int, tmp: Path) -> np.ndarray:
    """Synthesise ``text`` with espeak-ng, resample to ``rate``, trim the silence
    espeak-ng leaves at both ends and normalise the peak to -3 dBFS."""
    raw = tmp / "espeak.wav"
    res = tmp / "espeak_rs.wav"
    run([ESPEAK, "-v", VOICE, "-s", str(WPM), "-w", str(raw), text])
    run(
        [
            FFMPEG,
            "-hide_banner",
            "-nostdin",
            "-y",
            "-i",
            str(raw),
            "-af",
            f"aresample={rate}",
            "-ac",
            "1",
            "-c:a",
            "pcm_s16le",
            *BITEXACT,
            str(res),
        ]
    )
    x, got = read_wav(res)
    assert got == rate
    loud = np.flatnonzero(np.abs(x) > 0.02 * np.abs(x).max())
    pad = int(0.01 * rate)  # keep 10 ms around the first/last audible sample
    x = x[max(loud[0] - pad, 0) : loud[-1] + pad + 1]
    return x * (10 ** (-3 / 20) / np.abs(x).max())


def speech_track(
    text: str, rate: int, duration_s: float, tmp: Path, lead_s: float = LEAD_S
) -> tuple[np.ndarray, float]:
    """Silence, then speech starting at ``lead_s``, then silence up to exactly
    ``duration_s`` (``duration_s * rate`` samples). Returns the track and the
    speech length in seconds."""
    x = speech(text, rate, tmp)
    n_total = round(duration_s * rate)
    n_lead = round(lead_s * rate)
    if n_lead + len(x) > n_total - MIN_TAIL_S * rate:
        raise SystemExit(
            f"sentence {text!r} ({len(x) / rate:.2f} s) is too long for "
            f"a {duration_s} s clip; shorten it or raise WPM"
        )
    track = np.zeros(n_total, dtype=np.float32)
    track[n_lead : n_lead + len(x)] = x
    return track, len(x) / rate


# --------------------------------------------------------------------------- video
def smooth(u: float) -> float:
    """Cosine ease-in/ease-out, 0 -> 1 for u in [0, 1]."""
    return 0.5 - 0.5 * math.cos(math.pi * min(max(u, 0.0), 1.0))


def astronaut_camera(i: int, n: int, zoom_in: bool) -> tuple[float, float, float, float]:
    """Virtual camera for frame ``i`` of ``n`` over the 512x512 astronaut:
    (centre_row, centre_col, window_side_px, roll_rad). Slow zoom towards the
    face plus a small sinusoidal pan (x), tilt (y) and roll."""
    t = i / FPS
    e = smooth(i / (n - 1))
    if not zoom_in:
        e = 1.0 - e
    side = 440.0 + (340.0 - 440.0) * e  # source pixels shown across the frame
    cy = 240.0 + (200.0 - 240.0) * e + 6.0 * math.sin(2 * math.pi * t / 3.0 + 1.0)
    cx = 256.0 + (234.0 - 256.0) * e + 9.0 * math.sin(2 * math.pi * t / 4.0)
    roll = math.radians(1.5) * math.sin(2 * math.pi * t / 5.0)
    # keep the rotated window inside the picture
    half = 0.5 * side * (abs(math.cos(roll)) + abs(math.sin(roll)))
    cy = min(max(cy, half), 512.0 - half)
    cx = min(max(cx, half), 512.0 - half)
    return cy, cx, side, roll


def render(
    img: Image.Image, out_wh: tuple[int, int], cy: float, cx: float, scale: float, roll: float
) -> Image.Image:
    """Render ``out_wh`` pixels of ``img`` centred on (cy, cx) with ``scale``
    source pixels per output pixel, rotated by ``roll`` (radians)."""
    w, h = out_wh
    c, s = math.cos(roll), math.sin(roll)
    a, b = scale * c, -scale * s
    d, e = scale * s, scale * c
    ox, oy = w / 2.0, h / 2.0
    # PIL AFFINE: source = (a*x + b*y + c0, d*x + e*y + f0) for output (x, y)
    c0 = cx - (a * ox + b * oy)
    f0 = cy - (d * ox + e * oy)
    return img.transform(
        (w, h), Image.Transform.AFFINE, (a, b, c0, d, e, f0), resample=Image.Resampling.BICUBIC
    )


def astronaut_frames(n: int, zoom_in: bool):
    """Yield (frame 480x480 RGB, face centre (x, y) in the frame, face side in
    frame pixels, roll) for ``n`` frames."""
    from skimage import data

    src = Image.fromarray(data.astronaut())
    size = 480
    fr, fc = ASTRO_FACE_RC
    for i in range(n):
        cy, cx, side, roll = astronaut_camera(i, n, zoom_in)
        scale = side / size
        frame = render(src, (size, size), cy, cx, scale, roll)
        # where the face centre lands: invert source = C + scale * R(roll) (p - o)
        dx, dy = fc - cx, fr - cy
        c, s = math.cos(roll), math.sin(roll)
        px = size / 2 + (c * dx + s * dy) / scale
        py = size / 2 + (-s * dx + c * dy) / scale
        yield frame, (px, py), ASTRO_FACE_SIZE / scale, roll


def coffee_frames(n: int):
    """Slow left-to-right pan (with a slight zoom) over skimage's coffee photo
    (400x600), 640x480 output. No faces."""
    from skimage import data

    src = Image.fromarray(data.coffee())
    w, h = 640, 480
    for i in range(n):
        e = smooth(i / (n - 1))
        side_h = 380.0 - 30.0 * e  # source rows shown
        scale = side_h / h
        half_w, half_h = 0.5 * w * scale, 0.5 * side_h
        cx = half_w + 2 + (600.0 - 2 * half_w - 4) * e
        cy = 200.0 + 5.0 * math.sin(2 * math.pi * i / FPS / 3.0)
        cy = min(max(cy, half_h), 400.0 - half_h)
        yield render(src, (w, h), cy, cx, scale, 0.0)


def encode(frames, wh: tuple[int, int], out: Path, wav: Path | None) -> None:
    raw = b"".join(np.asarray(f, dtype=np.uint8).tobytes() for f in frames)
    cmd = [
        FFMPEG,
        "-hide_banner",
        "-nostdin",
        "-y",
        "-f",
        "rawvideo",
        "-pix_fmt",
        "rgb24",
        "-s",
        f"{wh[0]}x{wh[1]}",
        "-r",
        str(FPS),
        "-i",
        "-",
    ]
    if wav is not None:
        cmd += [
            "-i",
            str(wav),
            "-map",
            "0:v:0",
            "-map",
            "1:a:0",
            "-c:a",
            "aac",
            "-b:a",
            MP4_AUDIO_BITRATE,
            "-ar",
            str(MP4_AUDIO_RATE),
            "-ac",
            "1",
        ]
    else:
        cmd += ["-map", "0:v:0", "-an"]
    cmd += [*X264, "-r", str(FPS), *BITEXACT, "-movflags", "+faststart", str(out)]
    run(cmd, stdin=raw)


# --------------------------------------------------------------------------- outputs
def make_talking(tmp: Path) -> None:
    n = 6 * FPS
    track, sp = speech_track(SENTENCE_TALKING, MP4_AUDIO_RATE, n / FPS, tmp)
    wav = tmp / "talking.wav"
    write_wav(wav, track, MP4_AUDIO_RATE)
    frames = [f for f, *_ in astronaut_frames(n, zoom_in=True)]
    encode(frames, (480, 480), OUT_DIR / "astronaut_talking.mp4", wav)
    print(f"astronaut_talking.mp4: {n} frames, speech {LEAD_S:.2f}-{LEAD_S + sp:.2f} s")


def make_silent(tmp: Path) -> None:
    n = 3 * FPS
    frames = [f for f, *_ in astronaut_frames(n, zoom_in=False)]
    encode(frames, (480, 480), OUT_DIR / "astronaut_silent_noaudio.mp4", None)
    print(f"astronaut_silent_noaudio.mp4: {n} frames, no audio")


def make_no_face(tmp: Path) -> None:
    n = 3 * FPS
    track, sp = speech_track(SENTENCE_NO_FACE, MP4_AUDIO_RATE, n / FPS, tmp)
    wav = tmp / "no_face.wav"
    write_wav(wav, track, MP4_AUDIO_RATE)
    encode(list(coffee_frames(n)), (640, 480), OUT_DIR / "no_face.mp4", wav)
    print(f"no_face.mp4: {n} frames, speech {LEAD_S:.2f}-{LEAD_S + sp:.2f} s")


def make_speech_only(tmp: Path) -> None:
    track, sp = speech_track(SENTENCE_SPEECH_ONLY, WAV_RATE, 3.0, tmp, lead_s=WAV_LEAD_S)
    write_wav(OUT_DIR / "speech_only.wav", track, WAV_RATE)
    print(f"speech_only.wav: {len(track)} samples, speech {WAV_LEAD_S:.2f}-{WAV_LEAD_S + sp:.2f} s")


def make_frames() -> None:
    """ABAW ``cropped_aligned``-style crops: frame k (1-based) of
    astronaut_talking.mp4 -> frames/0-25-480x480/{k:05d}.jpg, 112x112, the crop
    following the face and undoing the camera roll; some frames omitted the
    way the organisers omit frames without a detected face."""
    folder = OUT_DIR / "frames" / f"0-{FPS}-480x480"
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    # same animation as astronaut_talking.mp4 (6 s); keep its first CROP_FRAMES frames
    gen = astronaut_frames(6 * FPS, zoom_in=True)
    for k in range(1, CROP_FRAMES + 1):
        frame, (px, py), face, roll = next(gen)
        if k in CROP_MISSING:
            continue
        side = CROP_SCALE * face  # in frame pixels
        # the (rotated) crop window must lie inside the 480x480 frame
        half = 0.5 * side * (abs(math.cos(roll)) + abs(math.sin(roll)))
        assert half <= px <= 480 - half and half <= py <= 480 - half, (k, px, py, half)
        crop = render(frame, (CROP_SIZE, CROP_SIZE), py, px, side / CROP_SIZE, -roll)
        crop.save(folder / f"{k:05d}.jpg", quality=90)
    print(f"frames/{folder.name}: {CROP_FRAMES - len(CROP_MISSING)} of {CROP_FRAMES} crops")


def main() -> None:
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        make_talking(tmp)
        make_silent(tmp)
        make_no_face(tmp)
        make_speech_only(tmp)
        make_frames()


if __name__ == "__main__":
    main()
