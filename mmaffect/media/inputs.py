"""Turning command-line inputs (files and folders) into a list of media sources.

Rules
-----
* A file is taken as given (its extension decides video, audio or image; an unknown extension
  is tried as a video, and probing says clearly if it is not one).
* A folder is searched recursively for video files (``.mp4 .avi .mkv .mov .mpg .mpeg .webm
  .flv``), audio files (``.wav .flac .mp3``), organiser frame folders (a folder holding
  ``00001.jpg``-style images; it is one source and is not searched further) and images
  (``.jpg .jpeg .png .bmp .tif .tiff .webp``).
* Images are never one source each: the images of one folder are **one image set** (kind
  ``"images"``, id: the folder's name), read as a sequence of independent one-frame inputs
  (:mod:`mmaffect.media.image_set`). Image files given on the command line make one set per
  folder they are in (the files given, not the whole folder).
* A frame folder ``<video>``, ``<video>_left`` or ``<video>_right`` takes its audio from the video
  or audio file whose name is ``<video>`` among the inputs or in ``audio_dirs``. Such a file is the
  audio source of its frame folders and is not processed as a video of its own.
* Source ids are file stems / folder names and must be unique (they name the output files).
  The same file reached twice (through symbolic links) is one source.
* Symbolic links are followed, each real folder once: a link back to a folder already searched
  (a loop such as ``a -> .``) is not followed, and is reported as a warning.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

from mmaffect.errors import InputError
from mmaffect.media.frame_folder import is_frame_folder, split_subject

VIDEO_EXTENSIONS = frozenset({".mp4", ".avi", ".mkv", ".mov", ".mpg", ".mpeg", ".webm", ".flv"})
AUDIO_EXTENSIONS = frozenset({".wav", ".flac", ".mp3"})
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"})

log = logging.getLogger(__name__)

Warn = Callable[[str], None]

MEDIA_EXTENSIONS = VIDEO_EXTENSIONS | AUDIO_EXTENSIONS | IMAGE_EXTENSIONS


@dataclass(frozen=True)
class MediaSource:
    """One unit of work: a video file, an audio file, an organiser frame folder or an image set."""

    id: str  # output name: file stem or folder name (``10-60-1280x720_left``)
    path: Path  # the file, or the folder of a frame folder or image set
    kind: str  # "video" | "audio" | "frames" | "images"
    base_id: str  # id without ``_left``/``_right``: the key of audio and word features
    subject: str | None = None  # "left" | "right" for two-person videos
    audio_path: Path | None = None  # where the soundtrack comes from (None: no audio source)
    fps: Fraction | None = None  # frame rate given by the user (frame folders)
    images: tuple[Path, ...] = ()  # an image set's files, sorted by name (frame i = image i)

    @property
    def has_video(self) -> bool:
        return self.kind in ("video", "frames", "images")


def _kind_of_file(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix in IMAGE_EXTENSIONS:
        return "image"  # one image of its folder's set
    return "audio" if suffix in AUDIO_EXTENSIONS else "video"


def _not_followed(link: Path, real: Path, inside: Path) -> str:
    if real == inside or real in inside.parents:
        return (
            f"{link} leads back to {real}, a folder already searched (a symlink loop): not followed"
        )
    return f"{link} leads to {real}, a folder already searched through another path: not followed"


def _walk(folder: Path, warn: Warn) -> Iterable[tuple[Path, str]]:
    """Media under ``folder``, following each real folder once (links included)."""
    searched = {folder.resolve()}

    def walk(current: Path) -> Iterable[tuple[Path, str]]:
        for entry in sorted(current.iterdir()):
            if entry.name.startswith("."):
                continue
            if entry.is_dir():
                real = entry.resolve()
                if real in searched:
                    warn(_not_followed(entry, real, current.resolve()))
                elif is_frame_folder(entry):
                    searched.add(real)
                    yield entry, "frames"
                else:
                    searched.add(real)
                    yield from walk(entry)
            elif entry.suffix.lower() in MEDIA_EXTENSIONS:
                yield entry, _kind_of_file(entry)

    return walk(folder)


def _expand(path: Path, warn: Warn) -> list[tuple[Path, str]]:
    """(path, kind) of the media one input names: itself, or what its folder holds."""
    if not path.exists():
        raise InputError(f"{path} does not exist")
    if not path.is_dir():
        return [(path, _kind_of_file(path))]
    if is_frame_folder(path):
        return [(path, "frames")]
    media = list(_walk(path, warn))
    if not media:
        exts = " ".join(sorted(MEDIA_EXTENSIONS))
        raise InputError(
            f"no media found in {path}",
            hint=f"looked for {exts} files and 00001.jpg frame folders",
        )
    return media


def discover(
    inputs: Sequence[str | Path],
    *,
    audio_dirs: Sequence[str | Path] = (),
    fps: float | None = None,
    on_warning: Warn | None = None,
) -> list[MediaSource]:
    """Expand files and folders into :class:`MediaSource` objects, sorted by id.

    Images become image sets: one source of kind ``"images"`` per folder, never one per image.

    ``on_warning`` receives one line per thing skipped that the user should know about (a
    symbolic-link loop); by default it goes to the ``mmaffect.media.inputs`` logger.

    Raises
    ------
    InputError
        A path that does not exist, a folder with no media, or two sources with the same id.
    """
    warn = on_warning or log.warning
    found = [media for raw in inputs for media in _expand(Path(raw), warn)]
    images = [p for p, kind in found if kind == "image"]
    found = [(p, kind) for p, kind in found if kind != "image"]
    by_stem = _audio_candidates(found, audio_dirs, warn)
    frame_bases = {split_subject(p.name)[0] for p, kind in found if kind == "frames"}
    rate = Fraction(fps).limit_denominator(1001) if fps else None
    candidates = []
    for p, kind in found:
        if kind == "frames":
            base, subject = split_subject(p.name)
            candidates.append(
                MediaSource(
                    id=p.name,
                    path=p,
                    kind="frames",
                    base_id=base,
                    subject=subject,
                    audio_path=by_stem.get(base),
                    fps=rate,
                )
            )
        elif p.stem not in frame_bases:  # else: the audio source of frame folders only
            base, subject = split_subject(p.stem)
            candidates.append(
                MediaSource(
                    id=p.stem, path=p, kind=kind, base_id=base, subject=subject, audio_path=p
                )
            )
    sources: dict[str, MediaSource] = {}
    for src in candidates + _image_sets(images):
        other = sources.get(src.id)
        if other is not None and other.path.resolve() == src.path.resolve():
            continue  # the same file reached twice: one source
        if other is not None:
            raise InputError(
                f"two inputs share the id {src.id!r}: {other.path} and {src.path}",
                hint="outputs are named by id; rename one or process them separately",
            )
        sources[src.id] = src
    return sorted(sources.values(), key=lambda s: s.id)


def _audio_candidates(
    found: list[tuple[Path, str]], audio_dirs: Sequence[str | Path], warn: Warn
) -> dict[str, Path]:
    """Where frame folders find their audio: video and audio files among the inputs (first)
    and in ``audio_dirs``, by stem."""
    by_stem: dict[str, Path] = {}
    for d in audio_dirs:
        if not Path(d).is_dir():
            raise InputError(f"audio folder {d} does not exist")
        for p, kind in _walk(Path(d), warn):
            if kind in ("video", "audio"):
                by_stem.setdefault(p.stem, p)
    for p, kind in found:
        if kind in ("video", "audio"):
            by_stem[p.stem] = p
    return by_stem


def _image_sets(images: list[Path]) -> list[MediaSource]:
    """One image set per folder (reached by any path), each image once, sorted by name."""
    groups: dict[Path, dict[Path, Path]] = {}
    for p in images:
        groups.setdefault(p.parent.resolve(), {}).setdefault(p.resolve(), p)
    sets = []
    for real, files in groups.items():
        folder = next(iter(files.values())).parent
        set_id = Path(os.path.abspath(folder)).name or real.name or "images"
        sets.append(
            MediaSource(
                id=set_id,
                path=folder,
                kind="images",
                base_id=set_id,
                images=tuple(sorted(files.values(), key=lambda f: f.name)),
            )
        )
    return sets
