"""Frames, audio and probing on small generated clips."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import make_video, run_ffmpeg

from mmaffect.errors import FFmpegNotFound
from mmaffect.media import NoAudio, iter_audio, iter_frames, load_audio, probe
from mmaffect.media import ffmpeg as ffmpeg_mod
from mmaffect.media.frames import output_size


def test_chunks_carry_indices_and_times(tiny_video):
    chunks = list(iter_frames(tiny_video, chunk_size=7))
    assert [len(c) for c in chunks] == [7, 7, 7, 4]
    indices = np.concatenate([c.indices for c in chunks])
    times = np.concatenate([c.times for c in chunks])
    assert indices.tolist() == list(range(25))
    np.testing.assert_allclose(times, np.arange(25) / 25)
    assert all(c.images.dtype == np.uint8 and c.images.shape[1:] == (120, 160, 3) for c in chunks)


def test_resize_keeps_aspect_or_is_exact(tiny_video):
    assert next(iter_frames(tiny_video, resize=80)).images.shape[1:] == (60, 80, 3)
    assert next(iter_frames(tiny_video, resize=(32, 48))).images.shape[1:] == (48, 32, 3)
    assert output_size(1280, 720, 224) == (224, 126)


def test_chunk_memory_does_not_grow_with_length(tmp_path):
    long = make_video(tmp_path / "long.mp4", seconds=8, audio=False)
    sizes = {c.images.nbytes for c in list(iter_frames(long, chunk_size=16))[:-1]}
    assert sizes == {16 * 120 * 160 * 3}


def test_stopping_early_ends_ffmpeg(tiny_video):
    gen = iter_frames(tiny_video, chunk_size=2)
    next(gen)
    gen.close()  # must not hang or leave a zombie; a new read still works
    assert sum(len(c) for c in iter_frames(tiny_video)) == 25


def test_pixels_are_rgb(tmp_path):
    red = tmp_path / "red.mp4"
    run_ffmpeg(
        "-f",
        "lavfi",
        "-i",
        "color=c=red:size=64x64:rate=10:duration=0.5",
        "-c:v",
        "libx264",
        "-pix_fmt",
        "yuv444p",
        "-qp",
        "0",
        str(red),
    )
    frame = next(iter_frames(red)).images[0].astype(int)
    r, g, b = frame[..., 0].mean(), frame[..., 1].mean(), frame[..., 2].mean()
    assert r > 240 and g < 15 and b < 15


def test_rotated_video_comes_out_upright(tmp_path):
    src = make_video(tmp_path / "src.mp4", size="64x48", audio=False)
    rot = tmp_path / "rot.mp4"
    run_ffmpeg("-display_rotation", "90", "-i", str(src), "-c", "copy", str(rot))
    info = probe(rot)
    assert info.video.rotation == 90 and (info.video.width, info.video.height) == (48, 64)
    assert next(iter_frames(rot, info=info)).images.shape[1:] == (64, 48, 3)


def test_vfr_rule(tmp_path):
    # 10 frames at 10 fps then 10 frames at 30 fps: variable frame rate.
    a = make_video(tmp_path / "a.mp4", fps="10", audio=False)
    b = make_video(tmp_path / "b.mp4", fps="30", seconds=1 / 3, audio=False)
    lst = tmp_path / "list.txt"
    lst.write_text(f"file '{a}'\nfile '{b}'\n")
    vfr = tmp_path / "vfr.mkv"
    run_ffmpeg("-f", "concat", "-safe", "0", "-i", str(lst), "-c", "copy", str(vfr))
    info = probe(vfr)
    assert info.video.frames == 20
    passthrough = sum(len(c) for c in iter_frames(vfr, info=info))
    assert passthrough == 20  # every decoded frame once
    times = np.concatenate([c.times for c in iter_frames(vfr, info=info)])
    assert np.all(np.diff(times) > 0)
    cfr = sum(len(c) for c in iter_frames(vfr, info=info, vfr="cfr"))
    assert abs(cfr - round(info.video.duration * float(info.video.fps))) <= 1


def test_no_audio_is_an_explicit_result(tmp_path):
    silent = make_video(tmp_path / "silent.mp4", audio=False)
    result = load_audio(silent)
    assert isinstance(result, NoAudio) and not result.has_audio
    assert result.reason == "no audio stream"
    assert list(iter_audio(silent)) == []


def test_audio_is_16k_mono_float(tiny_video):
    audio = load_audio(tiny_video)
    assert audio.sample_rate == 16000 and audio.samples.ndim == 1
    assert abs(audio.duration - 1.0) < 0.04
    # A 440 Hz tone: the spectrum peaks at 440 Hz.
    spectrum = np.abs(np.fft.rfft(audio.samples))
    peak = np.argmax(spectrum) * 16000 / len(audio.samples)
    assert abs(peak - 440) < 5
    streamed = np.concatenate(list(iter_audio(tiny_video, block_seconds=0.3)))
    np.testing.assert_allclose(streamed, audio.samples, atol=1e-6)


def test_audio_only_file(tmp_path):
    wav = tmp_path / "tone.wav"
    run_ffmpeg(
        "-f", "lavfi", "-i", "sine=frequency=300:sample_rate=48000:duration=2", "-ac", "2", str(wav)
    )
    info = probe(wav)
    assert info.kind == "audio" and info.video is None
    assert info.audio[0].sample_rate == 48000 and info.audio[0].channels == 2
    assert abs(load_audio(wav).duration - 2.0) < 1e-3


def test_missing_ffmpeg_is_a_clear_error(monkeypatch):
    ffmpeg_mod.ffmpeg_binary.cache_clear()
    monkeypatch.setenv("MMAFFECT_FFMPEG", "/nonexistent/ffmpeg")
    try:
        with pytest.raises(
            FFmpegNotFound,
            match="MMAFFECT_FFMPEG=/nonexistent/ffmpeg is not an executable.*install ffmpeg",
        ):
            ffmpeg_mod.ffmpeg_binary()
    finally:
        ffmpeg_mod.ffmpeg_binary.cache_clear()


def test_no_ffmpeg_anywhere(monkeypatch):
    import imageio_ffmpeg

    def missing():
        raise RuntimeError("No ffmpeg exe could be found")

    ffmpeg_mod.ffmpeg_binary.cache_clear()
    monkeypatch.delenv("MMAFFECT_FFMPEG", raising=False)
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.setattr(imageio_ffmpeg, "get_ffmpeg_exe", missing)
    try:
        with pytest.raises(FFmpegNotFound, match=r"no ffmpeg binary found \(install ffmpeg"):
            ffmpeg_mod.ffmpeg_binary()
    finally:
        ffmpeg_mod.ffmpeg_binary.cache_clear()


def test_failing_ffmpeg_names_the_file_and_keeps_stderr(tmp_path):
    from mmaffect.errors import MediaError

    with pytest.raises(MediaError, match="ffmpeg failed on nothing.mp4: ") as e:
        ffmpeg_mod.run(
            ["-i", str(tmp_path / "nothing.mp4"), "-f", "null", "-"], media=tmp_path / "nothing.mp4"
        )
    assert "No such file" in e.value.detail


def test_bframes_without_edit_list_count_exact_from_packets(tmp_path):
    # B-frames reorder packets but discard none: the fast path (packets = header) is kept.
    clip = make_video(tmp_path / "bf.mp4", seconds=4, audio=False, extra=["-g", "50", "-bf", "2"])
    v = probe(clip).video
    assert (v.frames, v.frames_header, v.frame_count_method) == (100, 100, "packets")
    assert sum(len(c) for c in iter_frames(clip)) == 100
