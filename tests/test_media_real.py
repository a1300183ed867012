"""Probe, frames and audio on the real media in ../shared/data."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from conftest import nonempty

from mmaffect.media import iter_frames, load_audio, probe


def decoded_frame_count(path: Path) -> int:
    """Independent count by decoding every frame with PyAV (what ffprobe -count_frames does)."""
    with av.open(str(path)) as c:
        return sum(1 for _ in c.decode(video=0))


def real_videos(shared_data: Path) -> list[Path]:
    v = shared_data / "video"
    return nonempty(
        sorted(v.glob("ravdess_av_actor05/*.mp4"))[:3]
        + sorted(v.glob("grid/*.mpg"))[:2]
        + sorted(v.glob("talking_heads/*.mp4"))
        + [v / "street_multiface" / "video.mp4", v / "hamilton" / "short_hamilton_clip.mp4"],
        "real videos",
    )


def test_ravdess_probe(shared_data):
    clips = nonempty(sorted((shared_data / "video/ravdess_av_actor05").glob("*.mp4")), "RAVDESS")
    assert len(clips) == 14
    info = probe(clips[0])
    v = info.require_video()
    assert v.fps == Fraction(30000, 1001)
    assert (v.width, v.height, v.codec) == (1280, 720, "h264")
    assert info.audio[0].codec == "aac" and info.audio[0].sample_rate == 48000
    assert v.frames == decoded_frame_count(clips[0])


def test_grid_probe_counts_by_decoding(shared_data):
    clip = nonempty(sorted((shared_data / "video/grid").glob("*.mpg")), "GRID clips")[0]
    info = probe(clip)
    v = info.require_video()
    assert info.container == "mpeg"
    assert v.codec == "mpeg1video" and v.fps == 25
    assert info.audio[0].codec == "mp2"
    # MPEG-PS lists no frame count: it must be counted by decoding.
    assert v.frames_header is None and v.frame_count_method == "decoded"
    assert v.frames == decoded_frame_count(clip) == 75


def test_street_clip_is_1080p(shared_data):
    info = probe(shared_data / "video/street_multiface/video.mp4")
    assert (info.video.width, info.video.height) == (1920, 1080)


def test_frame_counts_match_decoding_for_every_real_video(shared_data):
    for path in real_videos(shared_data):
        info = probe(path)
        expected = decoded_frame_count(path)
        assert info.video.frames == expected, path.name
        streamed = sum(len(c) for c in iter_frames(path, info=info, resize=96, chunk_size=40))
        assert streamed == expected, path.name


def test_decoded_audio_matches_its_stream(shared_data):
    for path in real_videos(shared_data):
        info = probe(path)
        audio = load_audio(path, info=info)
        assert audio.has_audio and audio.sample_rate == 16000 and audio.samples.dtype == np.float32
        frame = 1 / float(info.video.fps)
        assert abs(audio.duration - info.audio[0].duration) <= frame, path.name


def test_audio_ends_within_one_frame_of_video(shared_data):
    # Where the recording has both tracks of the same length (RAVDESS, GRID, the street clip,
    # the stage clip whose video starts 0.85 s late), they end within one video frame.
    # (One talking-head clip really has 56 ms less audio than video; it is not in this list.)
    v = shared_data / "video"
    paths = nonempty(
        sorted(v.glob("ravdess_av_actor05/*.mp4"))[:4]
        + sorted(v.glob("grid/*.mpg"))[:3]
        + [v / "street_multiface/video.mp4", v / "hamilton/short_hamilton_clip.mp4"],
        "videos with audio",
    )
    for path in paths:
        info = probe(path)
        audio = load_audio(path, info=info)
        video = info.video
        video_end = video.start_time + video.frames / float(video.fps)
        audio_end = audio.start_time + audio.duration
        assert abs(video_end - audio_end) <= 1 / float(video.fps) + 1e-3, path.name


def test_frames_match_pyav_pixels(shared_data):
    path = shared_data / "video/ravdess_av_actor05/01-01-01-01-02-01-05.mp4"
    chunk = next(iter_frames(path, chunk_size=5))
    with av.open(str(path)) as c:
        ref = [
            f.to_ndarray(format="rgb24") for _, f in zip(range(5), c.decode(video=0), strict=False)
        ]
    diff = np.abs(chunk.images.astype(int) - np.stack(ref).astype(int)).mean()
    assert diff < 2.0  # same decoder, colour conversion may round differently


def test_quiet_ravdess_audio_is_not_silent(shared_data):
    # The RAVDESS clips are quiet (-29 to -58 dB mean): they must still decode to real signal.
    path = shared_data / "video/ravdess_av_actor05/01-01-01-01-02-01-05.mp4"
    audio = load_audio(path)
    rms = float(np.sqrt(np.mean(audio.samples**2)))
    assert 1e-4 < rms < 0.1
    assert abs(audio.duration - 3.103) < 0.01


@pytest.mark.parametrize("every", [2, 5])
def test_every_n_keeps_source_indices(shared_data, every):
    path = shared_data / "video/grid/bbaf2n.mpg"
    indices = np.concatenate([c.indices for c in iter_frames(path, every=every, chunk_size=7)])
    assert indices.tolist() == list(range(0, 75, every))
