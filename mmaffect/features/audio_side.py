"""The audio side of extraction: speech features, the transcript and per-frame word vectors.

Runs in a worker thread beside the vision side (see :mod:`mmaffect.extraction`). Entries:

* ``speech``: ``values (n_frames, dim)`` (columns in ``docs/features_speech.md``);
* ``word``: ``values (n_frames, hidden + 1)`` (last column ``no_word``) and ``word_index``
  (``-1`` where no word is spoken); the word strings are in the entry's ``meta.json``;
* ``CACHE/<base_id>/transcript-<hash>.json``: the transcript with word times. It belongs to the
  soundtrack, so ``<video>_left`` and ``<video>_right`` share one ASR run.

Audio-only inputs (``.wav``, ``.flac``, ``.mp3``) have no frames of their own: their features
are laid on a grid of ``AUDIO_ONLY_FPS`` frames per second, ``round(duration × fps)`` frames.
"""

from __future__ import annotations

import contextlib
import threading
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np

from mmaffect.features.cache import EntryKey, FeatureCache, config_hash, source_signature
from mmaffect.features.stages import StageClock
from mmaffect.features.timing import FrameTiming
from mmaffect.media.source import OpenedSource
from mmaffect.watchdog import beat

AUDIO_ONLY_FPS = 30.0


def source_timing(opened: OpenedSource) -> FrameTiming:
    """The frame grid features of this source are aligned to."""
    video = opened.info.video
    if video is not None:
        return FrameTiming(fps=float(video.fps), n_frames=video.frames, start=video.start_time)
    fps = float(opened.source.fps or AUDIO_ONLY_FPS)
    duration = opened.info.duration or (opened.info.audio[0].duration if opened.info.audio else 0)
    return FrameTiming(fps=fps, n_frames=max(1, round((duration or 0) * fps)), start=0.0)


@dataclass
class AudioSideResult:
    computed: list[str] = field(default_factory=list)
    reused: list[str] = field(default_factory=list)
    words: int = 0
    notes: list[str] = field(default_factory=list)


class AudioSide:
    """Computes the audio-side entries of one video at a time (thread-safe)."""

    def __init__(self, cache: FeatureCache, options: Any, clock: StageClock):
        from mmaffect.features.speech import SpeechConfig
        from mmaffect.features.words import WordConfig

        self.cache, self.options, self.clock = cache, options, clock
        self.wanted = set(options.modalities)
        self.speech_config = options.speech or SpeechConfig()
        self.word_config = options.words or WordConfig()
        self._encoder = None
        self._encoder_lock = threading.Lock()
        self._base_locks: dict[str, threading.Lock] = defaultdict(threading.Lock)
        self._locks_lock = threading.Lock()

    def _keys(self, opened: OpenedSource, timing: FrameTiming):
        sid = opened.source.id
        speech_cfg = {**self.speech_config.to_dict(), "grid": timing.to_dict()}
        word_cfg = {
            **self.word_config.to_dict(),
            "grid": timing.to_dict(),
            "transcripts": str(self.options.transcripts or ""),
        }
        return {
            "speech": (EntryKey(sid, "speech", config_hash(speech_cfg)), speech_cfg),
            "word": (EntryKey(sid, "word", config_hash(word_cfg)), word_cfg),
        }

    def run(self, opened: OpenedSource) -> AudioSideResult:
        """Compute the missing entries of ``opened`` (every step is a beat of the watched work
        it runs in, :mod:`mmaffect.watchdog`)."""
        result = AudioSideResult()
        timing = source_timing(opened)
        audio_path = opened.source.audio_path
        signature = source_signature(audio_path) if audio_path else {"audio": None}
        keys = self._keys(opened, timing)
        todo = [
            n
            for n in ("speech", "word")
            if n in self.wanted
            and (self.options.force or not self.cache.is_fresh(keys[n][0], signature))
        ]
        result.reused = [n for n in ("speech", "word") if n in self.wanted and n not in todo]
        if "word" in self.wanted and "word" not in todo:
            result.words = len(self.cache.load(keys["word"][0]).meta.get("words", []))
        if not todo:
            return result
        # Each step below reads the soundtrack piece by piece as it decodes it (cut in pauses,
        # mmaffect.media.soundtrack), so memory does not grow with its length.
        audio = opened.soundtrack()
        if "speech" in todo:
            self._speech(audio, timing, keys["speech"], signature)
            result.computed.append("speech")
        if "word" in todo:
            beat("words")
            result.words = self._words(opened, audio, timing, keys["word"], signature)
            result.computed.append("word")
        if not audio.has_audio:
            result.notes.append(f"no audio ({audio.reason}): zero features, flags set")
        return result

    def _speech(self, audio, timing: FrameTiming, key_cfg, signature: dict) -> None:
        """The speech entry: the chosen feature sets' columns side by side (``prosody``: MFCC,
        pitch and energy, computed into the entry's rows as the soundtrack's pieces arrive;
        ``whisper``: the encoder states, ``whisper_0`` …)."""
        config = self.speech_config
        states = self._whisper_states(audio, timing) if "whisper" in config.features else None
        prosody = config.dim if "prosody" in config.features else 0
        width = prosody + (0 if states is None else states.shape[1])
        key, cfg = key_cfg
        with self.cache.writer(key, timing=timing, config=cfg, source=signature) as w:
            values = w.array("values", (width,))
            columns = []
            if prosody:
                from mmaffect.features.speech import speech_features

                beat("speech features")
                with self.clock("speech features", timing.n_frames):
                    speech_features(audio, timing, config, out=values[:, :prosody])
                columns += list(config.column_names)
            if states is not None:
                w.fill(values[:, prosody:], lambda a, b: states[a:b])
                columns += [f"whisper_{i}" for i in range(states.shape[1])]
            w.commit(columns=columns)

    def _whisper_states(self, audio, timing: FrameTiming) -> np.ndarray:
        from mmaffect.features.whisper_states import whisper_frames

        beat("whisper encoder")
        with self.clock("Whisper encoder", timing.n_frames):
            return whisper_frames(
                audio,
                timing,
                model=self.speech_config.whisper_model,
                models_dir=self.options.models_dir,
                device=self.options.device,
            )

    # -- words ----------------------------------------------------------------------------

    def encoder(self):
        with self._encoder_lock:
            if self._encoder is None:
                from mmaffect.features.words import WordEncoder

                with self.clock("load models"):
                    self._encoder = WordEncoder(
                        self.word_config.encoder,
                        self.options.device,
                        models_dir=self.options.models_dir,
                        pooling=self.word_config.pooling,
                    )
            return self._encoder

    @contextlib.contextmanager
    def _base_lock(self, base_id: str) -> Iterator[None]:
        """Held while one soundtrack is transcribed; waiting for another thread's long ASR
        run is progress, not a stall."""
        with self._locks_lock:
            lock = self._base_locks[base_id]
        while not lock.acquire(timeout=1.0):
            beat("waiting for the soundtrack's ASR")
        try:
            yield
        finally:
            lock.release()

    def transcript(self, opened: OpenedSource, audio, signature: dict):
        """The user's transcript if given, else the (cached) ASR transcript of the soundtrack."""
        from mmaffect.features.transcripts import (
            Transcript,
            find_user_transcript,
            load_user_transcript,
            transcribe,
        )

        src = opened.source
        if self.options.transcripts:
            path = find_user_transcript(self.options.transcripts, src.id, src.base_id)
            if path is not None:
                return load_user_transcript(path), path
        c = self.word_config
        asr = {
            "asr_model": c.asr_model,
            "language": c.language,
            "beam_size": c.beam_size,
            "vad": c.vad,
            "temperature_fallback": c.temperature_fallback,
            "version": c.version,
            "audio": signature,
        }
        path = self.cache.json_path(src.base_id, "transcript", config_hash(asr))
        with self._base_lock(src.base_id):  # _left and _right share one ASR run
            if path.is_file() and not self.options.force:
                import json

                return Transcript.from_dict(json.loads(path.read_text()), where=str(path)), path
            with self.clock("ASR (Whisper)"):
                transcript = transcribe(
                    audio,
                    model=c.asr_model,
                    models_dir=self.options.models_dir,
                    language=c.language,
                    device=self.options.device,
                    beam_size=c.beam_size,
                    vad=c.vad,
                    temperature_fallback=c.temperature_fallback,
                )
            self.cache.write_json(path, transcript.to_dict())
        return transcript, path

    def _words(self, opened, audio, timing, key_cfg, signature) -> int:
        """The word entry, written block by block (no whole-video copy of its rows)."""
        from mmaffect.features.words import (
            checked_embeddings,
            word_columns,
            word_index,
            word_rows,
        )

        transcript, path = self.transcript(opened, audio, signature)
        encoder = self.encoder()
        with self.clock("word embeddings", len(transcript.words)):
            embeddings = checked_embeddings(transcript, encoder.encode(transcript.texts))
        index = word_index(transcript, timing)
        key, cfg = key_cfg
        hidden = int(embeddings.shape[1])
        with self.cache.writer(key, timing=timing, config=cfg, source=signature) as w:
            w.fill(w.array("values", (hidden + 1,)), partial(word_rows, index, embeddings))
            w.fill(w.array("word_index", (), np.int32), lambda a, b: index[a:b])
            w.commit(
                columns=word_columns(hidden),
                extra={"words": list(transcript.texts), "transcript": str(path)},
            )
        return len(transcript.words)
