"""The word branch: timed words -> in-context BERT word vectors -> one vector per video frame.

Pipeline (DESIGN.md, "word clip")::

    audio -- transcribe (Whisper) --+
    user .json / .srt / .vtt -------+-- Transcript -- WordEncoder --> (n_words, hidden)
                                                  -- word_frames --> (n_frames, hidden + 1)

- :class:`WordEncoder` embeds each word *in context*: the whole transcript goes through the
  encoder once (in overlapping windows when it is longer than the model's maximum length) and
  each word's vector is the mean of the last-layer states of its sub-word tokens. The same
  word in two sentences therefore gets two (similar, not equal) vectors.
- :func:`word_frames` samples the words at the frame times: row ``i`` is the vector of the word
  being spoken at ``timing.times()[i]`` (a word covers ``[start, end)``), zeros between words;
  the last column ``no_word`` is 1 exactly where no word is spoken.

Transcripts and their sources live in :mod:`mmaffect.features.transcripts`; the names are
re-exported here so that ``from mmaffect.features.words import transcribe`` works.
"""

from __future__ import annotations

import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mmaffect.errors import InputError
from mmaffect.features.timing import FrameTiming
from mmaffect.features.transcripts import (
    DEFAULT_ASR_MODEL,
    DEFAULT_BEAM_SIZE,
    Transcript,
    Word,
    base_video_id,
    clear_asr_cache,
    find_user_transcript,
    load_user_transcript,
    transcribe,
)
from mmaffect.store import resolve

__all__ = [
    "DEFAULT_ENCODER",
    "WORDS_VERSION",
    "Transcript",
    "Word",
    "WordConfig",
    "WordEncoder",
    "WordFrames",
    "base_video_id",
    "checked_embeddings",
    "clear_asr_cache",
    "extract_words",
    "find_user_transcript",
    "load_user_transcript",
    "transcribe",
    "word_columns",
    "word_frames",
    "word_index",
    "word_rows",
]

DEFAULT_ENCODER = "all-MiniLM-L6-v2"
#: Bump when the computation changes in a way that invalidates cached word features.
#: 2: Whisper decodes at temperature 0 only (version 1 let faster-whisper fall back to
#: unseeded sampling, so one video could give other words on every run).
WORDS_VERSION = 2
POOLINGS = ("mean", "first")
#: Sub-word tokens of one word that are used at most (a "word" longer than this is noise).
MAX_TOKENS_PER_WORD = 32


# ---------------------------------------------------------------------------------------------
# Configuration (part of the feature-cache key)
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WordConfig:
    """Everything that changes the word features; its hash keys the feature cache.

    Attributes
    ----------
    asr_model : str
        Whisper model name (or path) used when no user transcript is given.
    language : str or None
        Language passed to Whisper; ``None`` detects it (``"en"`` for ``.en`` models).
    beam_size : int
        Whisper beam width (1 = greedy).
    vad : bool
        Silero VAD before Whisper.
    temperature_fallback : bool
        Let Whisper re-decode bad windows by sampling at higher temperatures; the transcript is
        then no longer reproducible (off: one decode at temperature 0).
    encoder : str
        Word encoder: a store name or a path to a local BERT-family checkpoint.
    pooling : str
        How sub-word states become a word vector: ``"mean"`` or ``"first"``.
    version : int
        Version of the word-feature computation (``WORDS_VERSION``).
    """

    asr_model: str = DEFAULT_ASR_MODEL
    language: str | None = None
    beam_size: int = DEFAULT_BEAM_SIZE
    vad: bool = True
    temperature_fallback: bool = False
    encoder: str = DEFAULT_ENCODER
    pooling: str = "mean"
    version: int = WORDS_VERSION

    def __post_init__(self) -> None:
        if self.pooling not in POOLINGS:
            raise InputError(
                f"word pooling must be one of {', '.join(POOLINGS)}, not {self.pooling!r}"
            )
        if int(self.beam_size) < 1:
            raise InputError(f"beam_size must be at least 1, got {self.beam_size}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def config_hash(self) -> str:
        """sha256 (hex) of :meth:`to_dict` (which includes ``version``), computed by
        :func:`mmaffect.features.cache.config_hash` like every cache key."""
        from mmaffect.features.cache import config_hash

        return config_hash(self.to_dict())


# ---------------------------------------------------------------------------------------------
# In-context word encoder
# ---------------------------------------------------------------------------------------------

_ENCODERS: dict[tuple[str, str], tuple[Any, Any]] = {}
_ENCODERS_LOCK = threading.Lock()


def _load_encoder(path: Path, device: str) -> tuple[Any, Any]:
    """(tokenizer, model) loaded once per (path, device) in this process, offline."""
    key = (str(path), device)
    with _ENCODERS_LOCK:
        if key not in _ENCODERS:
            from transformers import AutoModel, AutoTokenizer
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()  # no "Loading weights" bar inside our progress
            try:
                tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
                model = AutoModel.from_pretrained(str(path), local_files_only=True)
            except (OSError, ValueError, KeyError) as e:
                first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                raise InputError(
                    f"cannot load a BERT-family encoder from {path}: {first}",
                    hint="give a folder with config.json, the weights and the tokenizer files",
                ) from e
            model.eval().to(device)
            _ENCODERS[key] = (tokenizer, model)
        return _ENCODERS[key]


def _special_affixes(tokenizer: Any) -> tuple[list[int], list[int]]:
    """The special tokens a single sequence starts and ends with (BERT: [CLS] / [SEP])."""
    probe = tokenizer("a", add_special_tokens=True, return_special_tokens_mask=True)
    ids, mask = list(probe["input_ids"]), list(probe["special_tokens_mask"])
    content = [p for p, m in enumerate(mask) if m == 0]
    if not content:
        raise InputError("the encoder's tokenizer turns text into special tokens only")
    return ids[: content[0]], ids[content[-1] + 1 :]


class WordEncoder:
    """Contextual word vectors from a BERT-family encoder (default all-MiniLM-L6-v2, 384-d).

    Parameters
    ----------
    model : str
        A store name (``"all-MiniLM-L6-v2"``) or a path to a local checkpoint folder loadable with
        ``transformers.AutoTokenizer/AutoModel.from_pretrained(path, local_files_only=True)``.
    device : str
        ``"cpu"`` or ``"cuda"`` (``"cuda:N"``).
    models_dir : str or Path, optional
        Where to look for named models (see :func:`mmaffect.store.resolve`).
    pooling : str
        ``"mean"`` (average of the word's sub-word token states) or ``"first"``.
    batch_size : int, optional
        Windows per forward pass; default 1 on CPU, 128 on CUDA. On 2 CPU cores, 5,000 words
        took 1.6 s at 1 and 1.8 s at 4, and the peak memory rose by 41 MB at 1 and by 85 MB at
        4 (the attention maps of 4 windows of 512 tokens); at 16, by 210-230 MB.
    max_length : int, optional
        Tokens per window including special tokens; default the model's maximum (512).

    Notes
    -----
    Nothing is downloaded: loading is ``local_files_only``, so ``HF_HUB_OFFLINE=1`` is fine.
    A transcript longer than one window is cut, on word boundaries, into windows that overlap
    by about half; each word takes its vector from the window in which it sits most centrally,
    so every word sees at least a quarter window of context on each side (where there is any).
    """

    def __init__(
        self,
        model: str = DEFAULT_ENCODER,
        device: str = "cpu",
        *,
        models_dir: str | Path | None = None,
        pooling: str = "mean",
        batch_size: int | None = None,
        max_length: int | None = None,
    ) -> None:
        if pooling not in POOLINGS:
            raise InputError(f"word pooling must be one of {', '.join(POOLINGS)}, not {pooling!r}")
        self.name = model
        self.path = resolve(model, models_dir, what="word encoder")
        self.device = device
        self.pooling = pooling
        self.tokenizer, self.model = _load_encoder(self.path, device)
        self.batch_size = batch_size or (128 if device.startswith("cuda") else 1)
        limits = [getattr(self.model.config, "max_position_embeddings", 512) or 512]
        tok_max = getattr(self.tokenizer, "model_max_length", None)
        if isinstance(tok_max, int) and tok_max < 1_000_000:
            limits.append(tok_max)
        if max_length is not None:
            limits.append(int(max_length))
        self.max_length = min(limits)
        self._prefix, self._suffix = _special_affixes(self.tokenizer)
        self.n_special = len(self._prefix) + len(self._suffix)
        if self.max_length - self.n_special < 8:
            raise InputError(f"max_length {self.max_length} leaves no room for words")

    @property
    def hidden_size(self) -> int:
        return int(self.model.config.hidden_size)

    # -- tokenisation and windows --------------------------------------------------------------

    def _word_tokens(self, words: list[str]) -> list[list[int]]:
        unk = self.tokenizer.unk_token_id
        limit = min(MAX_TOKENS_PER_WORD, self.max_length - self.n_special)
        ids = self.tokenizer(list(words), add_special_tokens=False)["input_ids"]
        out = []
        for toks in ids:
            toks = list(toks)[:limit]
            out.append(toks if toks else ([unk] if unk is not None else []))
        return out

    def _windows(self, token_counts: list[int]) -> tuple[list[tuple[int, int]], np.ndarray]:
        """Word ranges ``[a, b)`` of the windows and, per word, the window it takes."""
        n = len(token_counts)
        capacity = self.max_length - self.n_special
        starts = np.concatenate([[0], np.cumsum(token_counts)]).astype(np.int64)
        windows: list[tuple[int, int]] = []
        a = 0
        while True:
            b = int(np.searchsorted(starts, starts[a] + capacity, side="right")) - 1
            b = max(b, a + 1)  # a word has at most `capacity` tokens, so this never overflows
            windows.append((a, b))
            if b >= n:
                break
            nxt = int(np.searchsorted(starts, starts[a] + capacity // 2, side="right")) - 1
            a = min(max(nxt, a + 1), b)
        choice = np.zeros(n, dtype=np.int64)
        best = np.full(n, -np.inf)
        centres = (starts[:-1] + starts[1:]) / 2.0
        for k, (a, b) in enumerate(windows):
            lo, hi = starts[a], starts[b]
            score = np.minimum(centres[a:b] - lo, hi - centres[a:b])
            better = score > best[a:b]
            choice[a:b][better] = k
            best[a:b][better] = score[better]
        return windows, choice

    # -- encoding --------------------------------------------------------------------------------

    def encode(self, words: list[str]) -> np.ndarray:
        """Vectors of the words of one transcript, each computed in its sentence context.

        Parameters
        ----------
        words : list of str
            The transcript's words in spoken order (``Transcript.texts``).

        Returns
        -------
        numpy.ndarray
            ``(len(words), hidden_size)`` float32.
        """
        return self.encode_many([words])[0]

    def encode_many(self, transcripts: list[list[str]]) -> list[np.ndarray]:
        """:meth:`encode` for several transcripts, their windows batched together (GPU-friendly).

        Parameters
        ----------
        transcripts : list of list of str
            Word lists, one per transcript.

        Returns
        -------
        list of numpy.ndarray
            One ``(n_words_j, hidden_size)`` float32 array per transcript.
        """
        import torch

        hidden = self.hidden_size
        results = [np.zeros((len(ws), hidden), dtype=np.float32) for ws in transcripts]
        # Every window: (transcript j, word range a..b, token ids per word)
        jobs: list[tuple[int, int, int, list[list[int]]]] = []
        assign: list[np.ndarray] = []
        for j, ws in enumerate(transcripts):
            if not ws:
                assign.append(np.zeros(0, dtype=np.int64))
                continue
            toks = self._word_tokens([str(w) for w in ws])
            windows, choice = self._windows([len(t) for t in toks])
            base = len(jobs)
            jobs += [(j, a, b, toks[a:b]) for a, b in windows]
            assign.append(choice + base)
        if not jobs:
            return results

        pad_id = self.tokenizer.pad_token_id or 0
        order = sorted(range(len(jobs)), key=lambda k: -sum(len(t) for t in jobs[k][3]))
        for first in range(0, len(order), self.batch_size):
            batch = order[first : first + self.batch_size]
            seqs, spans = [], []
            for k in batch:
                flat = [t for word in jobs[k][3] for t in word]
                ids = [*self._prefix, *flat, *self._suffix]
                pos, word_spans = len(self._prefix), []
                for word in jobs[k][3]:
                    word_spans.append(list(range(pos, pos + len(word))))
                    pos += len(word)
                seqs.append(ids)
                spans.append(word_spans)
            length = max(len(s) for s in seqs)
            input_ids = torch.full((len(seqs), length), pad_id, dtype=torch.long)
            attention = torch.zeros((len(seqs), length), dtype=torch.long)
            for r, s in enumerate(seqs):
                input_ids[r, : len(s)] = torch.tensor(s, dtype=torch.long)
                attention[r, : len(s)] = 1
            with torch.inference_mode():
                out = self.model(
                    input_ids=input_ids.to(self.device),
                    attention_mask=attention.to(self.device),
                )
            states = out.last_hidden_state.float().cpu().numpy()
            for r, k in enumerate(batch):
                j, a, _b, _ = jobs[k]
                take = assign[j]
                for w, positions in enumerate(spans[r]):
                    if take[a + w] != k or not positions:
                        continue
                    if self.pooling == "first":
                        results[j][a + w] = states[r, positions[0]]
                    else:
                        results[j][a + w] = states[r, positions].mean(axis=0)
        return results


# ---------------------------------------------------------------------------------------------
# Per-frame word vectors
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WordFrames:
    """Word vectors on the frame grid.

    Attributes
    ----------
    values : numpy.ndarray
        ``(n_frames, hidden + 1)`` float32: columns ``0..hidden-1`` the vector of the word spoken
        at the frame's time (zeros when none), column ``hidden`` the ``no_word`` flag (1.0 when
        no word is spoken, else 0.0).
    word_index : numpy.ndarray
        ``(n_frames,)`` int32 index into ``words`` of the word spoken at each frame, -1 if none.
    words : tuple of str
        The transcript's word strings (so a viewer can show ``words[word_index[i]]``).
    timing : FrameTiming
        The frame grid.
    """

    values: np.ndarray
    word_index: np.ndarray
    words: tuple[str, ...]
    timing: FrameTiming

    @property
    def hidden_size(self) -> int:
        return int(self.values.shape[1] - 1)

    @property
    def no_word(self) -> np.ndarray:
        """(n_frames,) float32: 1.0 where no word is spoken."""
        return self.values[:, -1]

    def word_at(self, frame: int) -> str | None:
        """The word spoken at frame ``frame``, or ``None``."""
        k = int(self.word_index[frame])
        return self.words[k] if k >= 0 else None

    def column_names(self) -> list[str]:
        """``word_000 .. word_{hidden-1}, no_word`` (for tables)."""
        return word_columns(self.hidden_size)


def word_frames(transcript: Transcript, embeddings: np.ndarray, timing: FrameTiming) -> WordFrames:
    """Put word vectors on the frame grid.

    Frame ``i`` (at ``t = timing.times()[i]``) gets the vector of word ``k`` when
    ``words[k].start <= t < words[k].end``; where words overlap, the one that started last wins.
    Frames no word covers get zeros and ``no_word = 1``. A word shorter than a frame period can
    fall between two frame times and then appears on no frame. (The whole grid at once; the
    extraction writes it block by block with :func:`word_index` and :func:`word_rows`.)

    Parameters
    ----------
    transcript : Transcript
        The timed words (video timeline).
    embeddings : numpy.ndarray
        ``(len(transcript.words), hidden)`` from :meth:`WordEncoder.encode`.
    timing : FrameTiming
        The frame grid; the result has exactly ``timing.n_frames`` rows.

    Returns
    -------
    WordFrames
    """
    emb = checked_embeddings(transcript, embeddings)
    index = word_index(transcript, timing)
    values = word_rows(index, emb, 0, len(index))
    return WordFrames(values, index, tuple(transcript.texts), timing)


def checked_embeddings(transcript: Transcript, embeddings: np.ndarray) -> np.ndarray:
    """``embeddings`` as an array, checked to hold one row per word of ``transcript``."""
    emb = np.asarray(embeddings)
    if emb.ndim != 2 or emb.shape[0] != len(transcript.words):
        raise InputError(
            f"word embeddings have shape {emb.shape}, expected ({len(transcript.words)}, hidden) "
            "for this transcript"
        )
    return emb


def word_index(transcript: Transcript, timing: FrameTiming) -> np.ndarray:
    """``(n_frames,)`` int32: the index of the word spoken at each frame time, -1 if none
    (the rule of :func:`word_frames`)."""
    times = timing.times()
    index = np.full(int(timing.n_frames), -1, dtype=np.int32)
    order = sorted(range(len(transcript.words)), key=lambda k: transcript.words[k].start)
    for k in order:  # later starts overwrite earlier ones where words overlap
        w = transcript.words[k]
        lo = int(np.searchsorted(times, w.start, side="left"))
        hi = int(np.searchsorted(times, w.end, side="left"))
        index[lo:hi] = k
    return index


def word_rows(index: np.ndarray, embeddings: np.ndarray, start: int, stop: int) -> np.ndarray:
    """Rows ``start..stop - 1`` of the word entry's values: ``(stop - start, hidden + 1)``
    float32, the spoken word's vector and the ``no_word`` column."""
    hidden = int(embeddings.shape[1])
    block = index[start:stop]
    rows = np.zeros((len(block), hidden + 1), dtype=np.float32)
    spoken = block >= 0
    rows[spoken, :hidden] = embeddings[block[spoken]]
    rows[~spoken, hidden] = 1.0
    return rows


def word_columns(hidden: int) -> list[str]:
    """``word_000 .. word_{hidden-1}, no_word``: the word entry's column names."""
    width = max(3, len(str(hidden - 1)))
    return [f"word_{i:0{width}d}" for i in range(hidden)] + ["no_word"]


def extract_words(
    audio: Any,
    timing: FrameTiming,
    config: WordConfig | None = None,
    *,
    transcript: Transcript | None = None,
    encoder: WordEncoder | None = None,
    models_dir: str | Path | None = None,
    device: str = "cpu",
) -> tuple[Transcript, WordFrames]:
    """The whole word branch for one video: transcript (ASR unless given), vectors, frames.

    Parameters
    ----------
    audio : AudioTrack or NoAudio
        The soundtrack (ignored when ``transcript`` is given).
    timing : FrameTiming
        The video's frame grid.
    config : WordConfig, optional
        ASR and encoder settings (defaults: tiny.en, greedy, VAD, MiniLM, mean pooling).
    transcript : Transcript, optional
        A user transcript (:func:`load_user_transcript`) to use instead of ASR.
    encoder : WordEncoder, optional
        A loaded encoder to reuse; else one is made from ``config.encoder``.
    models_dir : str or Path, optional
        Where named models are looked up.
    device : str
        ``"cpu"`` or ``"cuda"`` for both ASR and the encoder.

    Returns
    -------
    (Transcript, WordFrames)
    """
    config = config or WordConfig()
    if transcript is None:
        transcript = transcribe(
            audio,
            model=config.asr_model,
            models_dir=models_dir,
            language=config.language,
            device=device,
            beam_size=config.beam_size,
            vad=config.vad,
            temperature_fallback=config.temperature_fallback,
        )
    if encoder is None:
        encoder = WordEncoder(config.encoder, device, models_dir=models_dir, pooling=config.pooling)
    embeddings = encoder.encode(transcript.texts)
    return transcript, word_frames(transcript, embeddings, timing)
