"""``mmaffect demux``: split inputs into organiser-style frame folders and 16 kHz mono WAV files.

Layout per source id::

    OUT/<id>/frames/00001.jpg ...   # 1-based, 5 digits: file NNNNN is frame NNNNN - 1
    OUT/<id>/audio.wav              # 16 kHz mono 16-bit PCM (absent when there is no audio)
    OUT/<id>/manifest.json          # probe result, frame rule, what was written

The manifest is written last, atomically, and marks the source as done: a re-run skips it
(``force=True`` redoes it). Frames go into a temporary folder renamed when complete.
"""

from __future__ import annotations

import json
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mmaffect.atomic import atomic_dir, atomic_path, atomic_write_text, remove_dead_temps
from mmaffect.batch import UpToDate
from mmaffect.media import MediaSource, open_source
from mmaffect.media.audio import AudioTrack


@dataclass(frozen=True)
class DemuxOptions:
    frames: bool = True  # write the frame folder
    audio: bool = True  # write audio.wav
    resize: int | None = None  # longest side in pixels; None keeps the size
    every: int = 1  # keep 1 frame of every N (file names keep the source frame numbers)
    jpeg_quality: int = 95
    force: bool = False  # redo sources that are already done


def write_wav(path: Path, audio: AudioTrack) -> None:
    """16-bit PCM mono WAV, written atomically."""
    pcm = np.round(np.clip(audio.samples, -1.0, 1.0) * 32767).astype("<i2")
    with atomic_path(path) as tmp, wave.open(str(tmp), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(audio.sample_rate)
        w.writeframes(pcm.tobytes())


def demux_source(source: MediaSource, out: Path, options: DemuxOptions) -> str:
    """Demux one source; returns a one-line note for the batch summary."""
    from PIL import Image

    folder = out / source.id
    manifest_path = folder / "manifest.json"
    if manifest_path.exists() and not options.force:
        raise UpToDate("already demuxed")
    remove_dead_temps(folder)  # left by an interrupted run
    opened = open_source(source)
    manifest: dict = {"id": source.id, "source": str(source.path), "probe": opened.info.to_dict()}
    notes = []
    if options.frames and source.has_video:
        written = 0
        with atomic_dir(folder / "frames") as tmp:
            for chunk in opened.frames(resize=options.resize, every=options.every):
                for image, index in zip(chunk.images, chunk.indices, strict=True):
                    Image.fromarray(image).save(
                        tmp / f"{index + 1:05d}.jpg", quality=options.jpeg_quality
                    )
                    written += 1
        manifest["frames"] = {
            "folder": "frames",
            "written": written,
            "video_frames": opened.frame_count,
            "every": options.every,
            "resize": options.resize,
            "naming": "NNNNN.jpg is frame NNNNN-1 (1-based, 5 digits)",
            "rule": "decoded frames in presentation order, none duplicated or dropped",
        }
        notes.append(f"{written} frames")
    if options.audio:
        audio = opened.audio()
        if audio.has_audio:
            write_wav(folder / "audio.wav", audio)
            manifest["audio"] = {
                "file": "audio.wav",
                "sample_rate": audio.sample_rate,
                "seconds": round(audio.duration, 6),
                "start_time": audio.start_time,
                "source": str(audio.source),
            }
            notes.append(f"{audio.duration:.2f} s audio")
        else:
            manifest["audio"] = None
            manifest["no_audio_reason"] = audio.reason
            notes.append(f"no audio ({audio.reason})")
    atomic_write_text(manifest_path, json.dumps(manifest, indent=2))
    return ", ".join(notes)
