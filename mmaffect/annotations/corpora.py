"""Speech-emotion corpora mapped into the ABAW3+ 8-class EXPR label space.

The labels of EmoDB and RAVDESS are coded in their file names. Both corpora have one category
that ABAW lacks; the choices below are explained in ``docs/annotations.md``:

* EmoDB boredom → **Other**. Boredom is an acted emotion with its own prosody (low, flat pitch,
  slow tempo), and EmoDB kept only utterances that listeners recognised; ABAW's Other is exactly
  "an affective state that is neither neutral nor one of the six basic ones". Folding it into
  Neutral would teach the speech branch that audibly bored speech is neutral.
* RAVDESS calm → **Neutral**. RAVDESS added calm as a second baseline beside neutral (a
  relaxed delivery without emotional display); an Aff-Wild2 annotator has no class for a face
  or voice showing no expression but Neutral, and Other would fill with expressionless speech.
"""

from __future__ import annotations

import re
from pathlib import Path

from mmaffect.annotations.spaces import EXPR_8
from mmaffect.errors import AnnotationError

#: EmoDB's emotion letters (German initials) → English names.
EMODB_EMOTIONS: dict[str, str] = {
    "W": "anger",  # Wut
    "L": "boredom",  # Langeweile
    "E": "disgust",  # Ekel
    "A": "fear",  # Angst
    "F": "happiness",  # Freude
    "T": "sadness",  # Trauer
    "N": "neutral",
}

#: EmoDB letter → ABAW EXPR class name.
EMODB_TO_EXPR: dict[str, str] = {
    "W": "Anger",
    "L": "Other",
    "E": "Disgust",
    "A": "Fear",
    "F": "Happiness",
    "T": "Sadness",
    "N": "Neutral",
}

#: RAVDESS emotion code (third field of the file name) → English name.
RAVDESS_EMOTIONS: dict[str, str] = {
    "01": "neutral",
    "02": "calm",
    "03": "happy",
    "04": "sad",
    "05": "angry",
    "06": "fearful",
    "07": "disgust",
    "08": "surprised",
}

#: RAVDESS emotion code → ABAW EXPR class name.
RAVDESS_TO_EXPR: dict[str, str] = {
    "01": "Neutral",
    "02": "Neutral",
    "03": "Happiness",
    "04": "Sadness",
    "05": "Anger",
    "06": "Fear",
    "07": "Disgust",
    "08": "Surprise",
}

# 03a01Fa.wav: speaker (2 digits), text (a01-a07, b01-b10), emotion letter, version letter.
_EMODB_NAME = re.compile(
    r"(?P<speaker>\d{2})(?P<text>[ab]\d{2})(?P<emotion>[A-Z])(?P<version>[a-z])"
)
# 03-01-05-02-01-01-12.wav: modality, vocal channel, emotion, intensity, statement, repetition,
# actor.
_RAVDESS_NAME = re.compile(
    r"(?P<modality>\d{2})-(?P<channel>\d{2})-(?P<emotion>\d{2})-(?P<intensity>\d{2})"
    r"-(?P<statement>\d{2})-(?P<repetition>\d{2})-(?P<actor>\d{2})"
)


def _stem(filename: str | Path) -> str:
    name = Path(filename).name
    return name.split(".", 1)[0]


def emodb_label(filename: str | Path) -> int:
    """ABAW3+ EXPR class index of an EmoDB utterance, from its file name.

    Parameters
    ----------
    filename
        ``03a01Fa.wav`` or a path to it (any extension): speaker, text code, emotion letter
        (W anger, L boredom, E disgust, A fear, F happiness, T sadness, N neutral), version.

    Returns
    -------
    int
        Index into :data:`EXPR_8` (boredom → 7, Other).

    Raises
    ------
    AnnotationError
        The name does not follow EmoDB's code.
    """
    stem = _stem(filename)
    m = _EMODB_NAME.fullmatch(stem)
    if m is None or m["emotion"] not in EMODB_TO_EXPR:
        raise AnnotationError(
            f"{Path(filename).name}: not an EmoDB file name",
            hint="expected e.g. 03a01Fa.wav: speaker, text a01-b10, "
            "emotion letter W L E A F T or N, version letter",
        )
    return EXPR_8.names.index(EMODB_TO_EXPR[m["emotion"]])


def ravdess_label(filename: str | Path) -> int:
    """ABAW3+ EXPR class index of a RAVDESS recording, from its file name.

    Parameters
    ----------
    filename
        ``03-01-05-02-01-01-12.wav`` (or ``.mp4``, or a path): the third field is the emotion,
        01 neutral, 02 calm, 03 happy, 04 sad, 05 angry, 06 fearful, 07 disgust, 08 surprised.

    Returns
    -------
    int
        Index into :data:`EXPR_8` (calm → 0, Neutral).

    Raises
    ------
    AnnotationError
        The name does not follow RAVDESS's code.
    """
    stem = _stem(filename)
    m = _RAVDESS_NAME.fullmatch(stem)
    if m is None or m["emotion"] not in RAVDESS_TO_EXPR:
        raise AnnotationError(
            f"{Path(filename).name}: not a RAVDESS file name",
            hint="expected seven 2-digit fields like 03-01-05-02-01-01-12.wav, "
            "the third an emotion code 01-08",
        )
    return EXPR_8.names.index(RAVDESS_TO_EXPR[m["emotion"]])
