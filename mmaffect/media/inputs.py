"""Turning command-line inputs (files and folders) into a list of media sources.

Rules
-----
* A file is taken as given (its extension decides video or audio; an unknown extension is tried
  as a video, and probing says clearly if it is not one).
* A folder is searched recursively for video files (``.mp4 .avi .mkv .mov .mpg .mpeg .webm
  .flv``), audio files (``.wav .flac .mp3``) and organiser frame folders (a folder holding
  ``00001.jpg``-style images; it is one source and is not searched further).
* A frame folder ``<video>``, ``<video>_left`` or ``<video>_right`` takes its audio from the video
  or audio file whose name is ``<video>`` among the inputs or in ``audio_dirs``. Such a file is the
  audio source of its frame folders and is not processed as a video of its own.
* Source ids are file stems / folder names and must be unique (they name the output files).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

from mmaffect.errors import InputError
from mmaffect.media.frame_folder import is_frame_folder, split_subject

VIDEO_EXTENSIONS = frozenset({".mp4", ".avi", ".mkv", ".mov", ".mpg", ".mpeg", ".webm", ".flv"})
AUDIO_EXTENSIONS = frozenset({".wav", ".flac", ".mp3"})


@dataclass(frozen=True)
class MediaSource:
    """One unit of work: a video file, an audio file or an organiser frame folder."""

    id: str  # output name: file stem or folder name (``10-60-1280x720_left``)
    path: Path
    kind: str  # "video" | "audio" | "frames"
    base_id: str  # id without ``_left``/``_right``: the key of audio and word features
    subject: str | None = None  # "left" | "right" for two-person videos
    audio_path: Path | None = None  # where the soundtrack comes from (None: no audio source)
    fps: Fraction | None = None  # frame rate given by the user (frame folders)

    @property
    def has_video(self) -> bool:
        return self.kind in ("video", "frames")


def _kind_of_file(path: Path) -> str:
    return "audio" if path.suffix.lower() in AUDIO_EXTENSIONS else "video"


def _walk(folder: Path) -> Iterable[tuple[Path, str]]:
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith("."):
            continue
        if entry.is_dir():
            if is_frame_folder(entry):
                yield entry, "frames"
            else:
                yield from _walk(entry)
        elif entry.suffix.lower() in VIDEO_EXTENSIONS | AUDIO_EXTENSIONS:
            yield entry, _kind_of_file(entry)


def discover(
    inputs: Sequence[str | Path],
    *,
    audio_dirs: Sequence[str | Path] = (),
    fps: float | None = None,
) -> list[MediaSource]:
    """Expand files and folders into :class:`MediaSource` objects, sorted by id.

    Raises
    ------
    InputError
        A path that does not exist, a folder with no media, or two sources with the same id.
    """
    found: list[tuple[Path, str]] = []
    for raw in inputs:
        path = Path(raw)
        if not path.exists():
            raise InputError(f"{path} does not exist")
        if path.is_dir():
            if is_frame_folder(path):
                found.append((path, "frames"))
                continue
            media = list(_walk(path))
            if not media:
                exts = " ".join(sorted(VIDEO_EXTENSIONS | AUDIO_EXTENSIONS))
                raise InputError(
                    f"no media found in {path}",
                    hint=f"looked for {exts} files and 00001.jpg frame folders",
                )
            found.extend(media)
        else:
            found.append((path, _kind_of_file(path)))

    # Audio candidates for frame folders: media files among the inputs and in audio_dirs.
    by_stem: dict[str, Path] = {}
    for d in audio_dirs:
        if not Path(d).is_dir():
            raise InputError(f"audio folder {d} does not exist")
        for p, kind in _walk(Path(d)):
            if kind != "frames":
                by_stem.setdefault(p.stem, p)
    for p, kind in found:
        if kind != "frames":
            by_stem[p.stem] = p

    frame_bases = {split_subject(p.name)[0] for p, kind in found if kind == "frames"}
    rate = Fraction(fps).limit_denominator(1001) if fps else None
    sources: dict[str, MediaSource] = {}
    for p, kind in found:
        if kind == "frames":
            base, subject = split_subject(p.name)
            src = MediaSource(
                id=p.name,
                path=p,
                kind="frames",
                base_id=base,
                subject=subject,
                audio_path=by_stem.get(base),
                fps=rate,
            )
        else:
            if p.stem in frame_bases:
                continue  # the audio source of organiser frame folders, not a video of its own
            base, subject = split_subject(p.stem)
            src = MediaSource(
                id=p.stem,
                path=p,
                kind=kind,
                base_id=base,
                subject=subject,
                audio_path=p,
            )
        other = sources.get(src.id)
        if other is not None and other.path != src.path:
            raise InputError(
                f"two inputs share the id {src.id!r}: {other.path} and {src.path}",
                hint="outputs are named by id; rename one or process them separately",
            )
        sources[src.id] = src
    return sorted(sources.values(), key=lambda s: s.id)
