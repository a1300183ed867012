"""Label spaces of the ABAW tracks, as data, and recognising one from a header line.

Five layouts exist for the per-video label files (``ABAW_FORMATS.md``): VA, EXPR with 7 classes
(ABAW1/2) or 8 (ABAW3 onwards, adds Other), AU with 8 units (ABAW1) or 12 (ABAW2 onwards). The
header line names the columns exactly as the organisers write them, so it tells the layout apart
without any help from the folder name.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from mmaffect.errors import InputError

Track = Literal["VA", "EXPR", "AU"]
TRACKS: tuple[Track, ...] = ("VA", "EXPR", "AU")

# Value written for a frame (or an AU) the annotators did not label.
EXPR_UNANNOTATED = -1
AU_UNANNOTATED = -1
VA_UNANNOTATED = -5.0


@dataclass(frozen=True)
class LabelSpace:
    """One track's columns in one family of ABAW editions.

    Attributes
    ----------
    track
        ``"VA"``, ``"EXPR"`` or ``"AU"``.
    names
        Column names in file order, exactly as the organisers' header spells them. For EXPR the
        class index is the position in ``names`` (0 Neutral … 7 Other).
    edition_family
        The editions that use this layout, e.g. ``"ABAW1-2"`` or ``"ABAW3+"``.
    """

    track: Track
    names: tuple[str, ...]
    edition_family: str

    @property
    def header(self) -> str:
        """The header line as the organisers write it (no newline)."""
        return ",".join(self.names)

    @property
    def size(self) -> int:
        """Number of classes (EXPR), action units (AU) or dimensions (VA: 2)."""
        return len(self.names)

    @property
    def sentinel(self) -> float | int:
        """The value that marks an unannotated frame (VA: in either field)."""
        return VA_UNANNOTATED if self.track == "VA" else EXPR_UNANNOTATED

    @property
    def fields_per_line(self) -> int:
        """Comma-separated values on each frame line."""
        return 1 if self.track == "EXPR" else self.size

    def describe(self) -> str:
        """Short human name, e.g. ``"EXPR, 8 classes (ABAW3+)"``."""
        if self.track == "EXPR":
            return f"EXPR, {self.size} classes ({self.edition_family})"
        if self.track == "AU":
            return f"AU, {self.size} units ({self.edition_family})"
        return f"VA ({self.edition_family})"


VA = LabelSpace("VA", ("valence", "arousal"), "ABAW1+")
EXPR_7 = LabelSpace(
    "EXPR",
    ("Neutral", "Anger", "Disgust", "Fear", "Happiness", "Sadness", "Surprise"),
    "ABAW1-2",
)
EXPR_8 = LabelSpace("EXPR", (*EXPR_7.names, "Other"), "ABAW3+")
AU_8 = LabelSpace("AU", ("AU1", "AU2", "AU4", "AU6", "AU12", "AU15", "AU20", "AU25"), "ABAW1")
AU_12 = LabelSpace(
    "AU",
    ("AU1", "AU2", "AU4", "AU6", "AU7", "AU10", "AU12", "AU15", "AU23", "AU24", "AU25", "AU26"),
    "ABAW2+",
)

#: Every per-video layout, in the order error messages list them.
LABEL_SPACES: tuple[LabelSpace, ...] = (VA, EXPR_7, EXPR_8, AU_8, AU_12)

#: Header of the s-Aff-Wild2 MTL split files (rows carry 16 fields nevertheless).
MTL_HEADER: tuple[str, ...] = ("image", "valence", "arousal", "expression", "aus")


def header_fields(line: str) -> tuple[str, ...]:
    """Split a header line into stripped fields (a UTF-8 BOM, CR and spaces are ignored)."""
    line = line.lstrip("\ufeff").strip()
    return tuple(f.strip() for f in line.split(","))


def match_header(line: str) -> LabelSpace | None:
    """The label space whose header is ``line``, or ``None``.

    The column names must match exactly and in order, with the organisers' letter case
    (``Neutral``, ``AU1``, ``valence``). Spaces around names, a trailing CR and a UTF-8 BOM are
    tolerated.

    Parameters
    ----------
    line
        The first line of a label file.

    Returns
    -------
    LabelSpace or None
        ``None`` when the line is no ABAW per-video header (an MTL header included).
    """
    fields = header_fields(line)
    for space in LABEL_SPACES:
        if fields == space.names:
            return space
    return None


def near_header(line: str) -> LabelSpace | None:
    """A label space whose header differs from ``line`` only in letter case, else ``None``."""
    fields = tuple(f.casefold() for f in header_fields(line))
    for space in LABEL_SPACES:
        if fields == tuple(n.casefold() for n in space.names):
            return space
    return None


def is_mtl_header(line: str) -> bool:
    """Whether ``line`` is the MTL header (a trailing comma is tolerated, as on MTL rows)."""
    fields = header_fields(line)
    if fields and fields[-1] == "":
        fields = fields[:-1]
    return fields == MTL_HEADER


def label_space_for(track: str, edition: int) -> LabelSpace:
    """The label space a given ABAW edition uses for a track.

    Parameters
    ----------
    track
        ``"VA"``, ``"EXPR"`` or ``"AU"`` (any letter case).
    edition
        ABAW edition number, 1 (FG 2020) to 8 (CVPR 2025). MTL editions (4, 7) get the
        layouts their MTL rows use: 8 EXPR classes and 12 AUs.

    Returns
    -------
    LabelSpace
    """
    if not 1 <= edition <= 8:
        raise InputError(f"ABAW edition {edition} does not exist (editions are 1 to 8)")
    t = parse_track(track)
    if t == "VA":
        return VA
    if t == "EXPR":
        return EXPR_7 if edition <= 2 else EXPR_8
    return AU_8 if edition == 1 else AU_12


def parse_track(track: str) -> Track:
    """``"expr"`` → ``"EXPR"``; an unknown name raises ``InputError`` listing the valid ones."""
    t = track.strip().upper()
    if t not in TRACKS:
        raise InputError(f"unknown track {track!r}", hint=f"expected one of: {', '.join(TRACKS)}")
    return t  # type: ignore[return-value]
