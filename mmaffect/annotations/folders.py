"""Folders of per-video label files, and the official train/validation split folders.

Any folder name is accepted (releases used ``EXPR_Set/Train_Set``,
``EXPR_Classification_Challenge/Train_Set``, ``AU_Detection_Challenge/…`` and others): the track
comes from each file's header, never from the folder's name.
"""

from __future__ import annotations

from pathlib import Path

from mmaffect.annotations.spaces import LabelSpace, match_header, parse_track
from mmaffect.annotations.video_labels import VideoLabels, read_video_labels
from mmaffect.errors import AnnotationError, InputError

# Folder names (compared in lower case) of the two labelled splits.
SPLIT_FOLDER_NAMES: dict[str, tuple[str, ...]] = {
    "train": ("train_set", "train", "training_set", "training"),
    "validation": ("validation_set", "validation", "valid_set", "valid", "val_set", "val"),
}


def label_files(folder: Path, *, recursive: bool = False) -> list[Path]:
    """The ``*.txt`` files of ``folder``, sorted; hidden files (``.x.txt``, ``._x.txt``) skipped."""
    pattern = "**/*.txt" if recursive else "*.txt"
    return sorted(
        p
        for p in folder.glob(pattern)
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )


def read_label_folder(
    folder: str | Path,
    *,
    track: str | None = None,
    recursive: bool = False,
    allow_empty: bool = False,
) -> dict[str, VideoLabels]:
    """Read every per-video label file in a folder.

    Parameters
    ----------
    folder
        A folder of ``<video>.txt`` files, whatever its name.
    track
        Keep only files of this track (``"EXPR"``, ``"AU"``, ``"VA"``) and skip the others.
        Without it every file must belong to the same layout.
    recursive
        Also read the files in sub-folders; a video id may then occur only once.
    allow_empty
        Accept header-only files (0 frames), see :func:`read_video_labels`.

    Returns
    -------
    dict of str to VideoLabels
        Keyed by video id (``_left``/``_right`` kept), sorted by id.

    Raises
    ------
    AnnotationError
        A bad file (its first problem), a folder that mixes layouts (e.g. EXPR and AU, or
        7- and 8-class EXPR), a video id found twice, or no file of the requested track.
    InputError
        The folder does not exist or holds no ``*.txt`` file.
    """
    folder = Path(folder)
    wanted = parse_track(track) if track is not None else None
    if not folder.is_dir():
        raise InputError(f"{folder}: no such folder")
    files = label_files(folder, recursive=recursive)
    if not files:
        raise InputError(
            f"{folder}: no *.txt label files",
            hint=None if recursive else "pass recursive=True to look in sub-folders",
        )
    found: dict[str, VideoLabels] = {}
    first: VideoLabels | None = None
    for path in files:
        if wanted is not None:
            space = _peek_space(path)
            if space is not None and space.track != wanted:
                continue  # another track's file: not even parsed
        labels = read_video_labels(path, allow_empty=allow_empty)
        if wanted is not None and labels.track != wanted:
            continue
        if first is None:
            first = labels
        elif labels.space != first.space:
            raise AnnotationError(
                f"{folder}: mixes label layouts: {first.path} is {first.space.describe()} "
                f"but {path} is {labels.space.describe()}",
                hint="keep one layout per folder"
                + ("" if wanted else ", or pass track= to read one track"),
            )
        if labels.video_id in found:
            raise AnnotationError(
                f"{folder}: video {labels.video_id} has two label files: "
                f"{found[labels.video_id].path} and {path}"
            )
        found[labels.video_id] = labels
    if not found:
        raise AnnotationError(f"{folder}: no {wanted} label files among {len(files)} *.txt files")
    return dict(sorted(found.items()))


def _peek_space(path: Path) -> LabelSpace | None:
    try:
        with path.open("rb") as f:
            first = f.readline(4096)
    except OSError:
        return None  # read_video_labels reports it
    return match_header(first.decode("utf-8-sig", errors="replace"))


def find_split_folders(parent: str | Path) -> dict[str, Path]:
    """Find the labelled splits' folders under ``parent`` by their usual names.

    ``Train_Set``/``train``/``Training_Set`` become ``"train"``; ``Validation_Set``/``val``/
    ``valid`` become ``"validation"`` (letter case ignored).

    Parameters
    ----------
    parent
        The folder that holds the split folders, e.g. ``…/EXPR_Set``.

    Returns
    -------
    dict of str to Path
        ``{"train": …, "validation": …}`` with the splits found (at least one).

    Raises
    ------
    InputError
        No split folder, or two folders for the same split (``Train_Set`` and ``train``).
    """
    parent = Path(parent)
    if not parent.is_dir():
        raise InputError(f"{parent}: no such folder")
    subfolders = sorted(p for p in parent.iterdir() if p.is_dir() and not p.name.startswith("."))
    splits: dict[str, Path] = {}
    for split, names in SPLIT_FOLDER_NAMES.items():
        matches = [p for p in subfolders if p.name.lower() in names]
        if len(matches) > 1:
            raise InputError(
                f"{parent}: {len(matches)} folders for the {split} split: "
                + ", ".join(p.name for p in matches),
                hint="keep one",
            )
        if matches:
            splits[split] = matches[0]
    if not splits:
        seen = ", ".join(p.name for p in subfolders) or "none"
        raise InputError(
            f"{parent}: no Train_Set or Validation_Set folder (sub-folders: {seen})",
            hint="also recognised: train, training, val, valid, validation",
        )
    return splits


def read_split_folders(
    parent: str | Path, *, track: str | None = None
) -> dict[str, dict[str, VideoLabels]]:
    """Read the train and validation label folders found under ``parent``.

    Parameters
    ----------
    parent
        The folder that holds ``Train_Set``/``Validation_Set`` (or ``train``/``val``).
    track
        As in :func:`read_label_folder`.

    Returns
    -------
    dict
        ``{"train": {video_id: VideoLabels}, "validation": {...}}`` for the splits found.

    Raises
    ------
    AnnotationError
        The splits use different layouts, or one video is in both splits.
    """
    splits = {
        name: read_label_folder(folder, track=track)
        for name, folder in find_split_folders(parent).items()
    }
    if len(splits) == 2:
        train, val = splits["train"], splits["validation"]
        a, b = next(iter(train.values())), next(iter(val.values()))
        if a.space != b.space:
            raise AnnotationError(
                f"{parent}: the train split is {a.space.describe()} "
                f"but the validation split is {b.space.describe()}"
            )
        both = sorted(train.keys() & val.keys())
        if both:
            more = f" and {len(both) - 1} more" if len(both) > 1 else ""
            raise AnnotationError(
                f"{parent}: video {both[0]}{more} is in both the train and the validation split"
            )
    return splits


def find_track_folders(parent: str | Path) -> dict[str, Path]:
    """The uni-task annotation folders under ``parent``, keyed by the track their files hold.

    Each direct sub-folder holding ``Train_Set``/``Validation_Set`` (e.g. the release's
    ``EXPR_Recognition_Challenge``, ``AU_Detection_Challenge``, ``VA_Estimation_Challenge``) is
    recognised by the header of its first label file, not by its name.

    Returns
    -------
    dict of str to Path
        ``{"EXPR": folder, "AU": folder, "VA": folder}`` for the tracks found.

    Raises
    ------
    InputError
        No such folder, no track folder found, or two folders of one track.
    """
    parent = Path(parent)
    if not parent.is_dir():
        raise InputError(f"{parent}: no such folder")
    found: dict[str, Path] = {}
    for sub in sorted(p for p in parent.iterdir() if p.is_dir() and not p.name.startswith(".")):
        try:
            splits = find_split_folders(sub)
        except InputError:
            continue
        space = None
        for folder in splits.values():
            files = label_files(folder)
            if files:
                space = _peek_space(files[0])
                break
        if space is None:
            continue
        if space.track in found:
            raise InputError(
                f"{parent}: two {space.track} folders: {found[space.track].name} and {sub.name}",
                hint="keep one per track",
            )
        found[space.track] = sub
    if not found:
        raise InputError(
            f"{parent}: no uni-task annotation folder (a sub-folder with Train_Set/Validation_Set)"
        )
    return found
