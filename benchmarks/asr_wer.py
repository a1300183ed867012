"""ASR word error rate (WER) of the toolkit's Whisper models, and word-timing error on GRID.

Usage::

    python benchmarks/asr_wer.py [--models whisper-tiny.en,whisper-base] [--device cpu]
        [--datasets lhotse,grid,ravdess] [--limit N] [--beam-size 1] [--no-vad]
        [--language en] [--json F]

Each clip goes through the normal toolkit path: :func:`mmaffect.media.audio.load_audio`
(16 kHz mono float32) then :func:`mmaffect.features.transcripts.transcribe` with the toolkit
defaults (greedy decoding, ``beam_size=1``; Silero VAD on) unless an option says otherwise.
Whisper models are found by :func:`mmaffect.store.resolve` (``models_dir=MODELS``).

Data (under ``DATA``, read-only):

* ``lhotse``: ``asr/lhotse/`` (4 clips: LibriSpeech, LJSpeech x2, AMI); references in
  ``TRANSCRIPTS.txt``. The AMI line's segments (``1.46s+1.36s: WORDS ; ...``) are joined.
* ``grid``: ``video/grid/*.mpg`` (11 clips), references in
  ``TRANSCRIPTS_from_GRID_filename_code.tsv``. The clip with a word alignment
  (``swwp2s.align``, times in 1/25000 s) comes first, so ``--limit`` always keeps it.
* ``ravdess``: ``video/ravdess_av_actor05/*.mp4`` (14 clips); the statement is field 5 of the
  file name (``01`` "Kids are talking by the door", ``02`` "Dogs are sitting by the door").

Scoring (``jiwer``): reference and hypothesis (``Transcript.text``) are normalised the same way:
lowercase; curly apostrophes to ``'``; thousands commas inside numbers dropped; every character
that is not a letter, digit, apostrophe or space becomes a space (hyphens too); apostrophes kept
only inside words; whitespace collapsed. Digits are then spelled out (the ``WER`` column): a
token mixing letters and digits is split at the boundaries (``P2`` -> ``p 2``), and each run of
digits becomes words by :func:`number_words` (0-999 as usual, "one hundred twenty three";
1000-9999 as years are spoken, ``1813`` -> "eighteen thirteen", ``1905`` -> "nineteen oh five",
``1900`` -> "nineteen hundred", except multiples of 1000 and 1000-1099, 2000-2099, ... which
read "two thousand five"; a leading zero or 5+ digits: digit by digit). ``WER raw`` is the
same without spelling digits out. WER is corpus-level: (S + D + I) / reference words, summed
over the clips of a dataset (``all``: over every clip scored).

Word timing (GRID clip ``id2_vcd_swwp2s.mpg``): the hypothesis words, normalised one by one (a
word that gives k tokens, ``P2`` -> ``p two``, has its span split into k equal parts), are
aligned to the ``.align`` words by jiwer; for the correctly recognised words (jiwer hits)
the mean absolute error of the start and of the end times is reported in ms.

Speed: each model is loaded by a warm-up call (one transcription of the first clip, discarded),
reported as ``load_seconds``; then ``x_realtime`` = audio seconds / seconds spent in
``transcribe`` over all clips (audio decoding not included).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import sys
import time
from importlib.metadata import version
from pathlib import Path

from _common import DATA, MODELS

DATASETS = ("lhotse", "grid", "ravdess")
GRID_ALIGN_CLIP = "id2_vcd_swwp2s.mpg"
GRID_ALIGN_FILE = "swwp2s.align"
ALIGN_UNITS_PER_SECOND = 25_000
RAVDESS_STATEMENTS = {"01": "Kids are talking by the door", "02": "Dogs are sitting by the door"}

# ---------------------------------------------------------------------------------------------
# Normalisation
# ---------------------------------------------------------------------------------------------

_ONES = (
    *("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"),
    *("eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen"),
    *("eighteen", "nineteen"),
)
_TENS = ("", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety")


def _under_100(n: int) -> str:
    if n < 20:
        return _ONES[n]
    return _TENS[n // 10] + ("" if n % 10 == 0 else " " + _ONES[n % 10])


def _under_1000(n: int) -> str:
    if n < 100:
        return _under_100(n)
    rest = n % 100
    return f"{_ONES[n // 100]} hundred" + (f" {_under_100(rest)}" if rest else "")


def number_words(digits: str) -> str:
    """Spell a run of digits: ``"2"`` -> two, ``"1813"`` -> eighteen thirteen (see module doc)."""
    n = int(digits)
    if (len(digits) > 1 and digits[0] == "0") or n > 9999:
        return " ".join(_ONES[int(d)] for d in digits)
    if n < 1000:
        return _under_1000(n)
    high, low = divmod(n, 100)
    if n % 1000 == 0 or high % 10 == 0:  # 1000, 2005, 3040: "two thousand five"
        rest = n % 1000
        return f"{_ONES[n // 1000]} thousand" + (f" {_under_1000(rest)}" if rest else "")
    if low == 0:  # 1900: nineteen hundred
        return f"{_under_100(high)} hundred"
    if low < 10:  # 1905: nineteen oh five
        return f"{_under_100(high)} oh {_ONES[low]}"
    return f"{_under_100(high)} {_under_100(low)}"  # 1813: eighteen thirteen


def normalise(text: str, *, spell_digits: bool = True) -> list[str]:
    """Words of ``text`` for scoring (see the module docstring)."""
    s = text.lower().replace("\u2019", "'").replace("\u2018", "'")
    s = re.sub(r"(?<=\d),(?=\d{3})", "", s)
    s = re.sub(r"[^\w\s']|_", " ", s)
    s = re.sub(r"(?<!\w)'|'(?!\w)", " ", s)
    if spell_digits:
        s = re.sub(r"(?<=[^\W\d_])(?=\d)|(?<=\d)(?=[^\W\d_])", " ", s)
        s = re.sub(r"\d+", lambda m: f" {number_words(m.group())} ", s)
    return s.split()


# ---------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------


def _tsv_rows(path: Path) -> list[list[str]]:
    lines = path.read_text(encoding="utf-8").splitlines()
    return [line.split("\t") for line in lines if line.strip() and not line.startswith("#")]


def lhotse_clips() -> list[tuple[Path, str]]:
    folder = DATA / "asr" / "lhotse"
    clips = []
    for row in _tsv_rows(folder / "TRANSCRIPTS.txt"):
        name, text = row[0], row[1]
        if re.match(r"^\s*[\d.]+s\+[\d.]+s:", text):  # AMI: "1.46s+1.36s: WORDS ; ..."
            segments = [re.sub(r"^\s*[\d.]+s\+[\d.]+s:", "", seg) for seg in text.split(";")]
            text = " ".join(seg.strip() for seg in segments)
        clips.append((folder / name, text))
    return sorted(clips)


def grid_clips() -> list[tuple[Path, str]]:
    folder = DATA / "video" / "grid"
    rows = _tsv_rows(folder / "TRANSCRIPTS_from_GRID_filename_code.tsv")
    clips = sorted((folder / name, text) for name, text in rows)
    return sorted(clips, key=lambda c: c[0].name != GRID_ALIGN_CLIP)  # the aligned clip first


def ravdess_clips() -> list[tuple[Path, str]]:
    folder = DATA / "video" / "ravdess_av_actor05"
    return [(p, RAVDESS_STATEMENTS[p.name.split("-")[4]]) for p in sorted(folder.glob("*.mp4"))]


def grid_alignment(*, keep_silence: bool = False) -> list[tuple[float, float, str]]:
    """``(start s, end s, word)`` of the aligned GRID clip, in order; ``sil`` rows dropped."""
    text = (DATA / "video" / "grid" / GRID_ALIGN_FILE).read_text()
    rows = [line.split() for line in text.splitlines() if line.strip()]
    return [
        (int(a) / ALIGN_UNITS_PER_SECOND, int(b) / ALIGN_UNITS_PER_SECOND, w)
        for a, b, w in rows
        if keep_silence or w != "sil"
    ]


# ---------------------------------------------------------------------------------------------
# Scoring
# ---------------------------------------------------------------------------------------------


def score(ref: list[str], hyp: list[str]) -> dict:
    import jiwer

    if not ref:
        raise ValueError("empty reference")
    out = jiwer.process_words(" ".join(ref), " ".join(hyp))
    return {
        "substitutions": out.substitutions,
        "deletions": out.deletions,
        "insertions": out.insertions,
        "hits": out.hits,
    }


def totals(rows: list[dict], key: str = "counts") -> dict:
    keys = ("substitutions", "deletions", "insertions", "hits")
    s = {k: sum(r[key][k] for r in rows) for k in keys}
    ref_words = sum(r["ref_words"] for r in rows)
    errors = s["substitutions"] + s["deletions"] + s["insertions"]
    return {"ref_words": ref_words, "errors": errors, "wer": errors / ref_words, **s}


def timing_error(transcript, start_time: float) -> dict:
    """Word start/end errors against ``swwp2s.align`` for the correctly recognised words."""
    import jiwer

    ref = grid_alignment()
    hyp = []  # (token, start, end) on the clip's own timeline
    for w in transcript.words:
        tokens = normalise(w.text)
        step = (w.end - w.start) / max(len(tokens), 1)
        for k, tok in enumerate(tokens):
            t0 = w.start - start_time + k * step
            hyp.append((tok, t0, t0 + step))
    ref_tokens = [t for _, _, word in ref for t in normalise(word)]
    if len(ref_tokens) != len(ref):
        raise ValueError(f"{GRID_ALIGN_FILE}: a word does not normalise to one token: {ref}")
    words = []
    if hyp:
        chunks = jiwer.process_words(" ".join(ref_tokens), " ".join(h[0] for h in hyp))
        for chunk in chunks.alignments[0]:
            if chunk.type != "equal":
                continue
            for i, j in zip(
                range(chunk.ref_start_idx, chunk.ref_end_idx),
                range(chunk.hyp_start_idx, chunk.hyp_end_idx),
                strict=True,
            ):
                words.append(
                    {
                        "word": ref_tokens[i],
                        "ref_start": round(ref[i][0], 3),
                        "ref_end": round(ref[i][1], 3),
                        "hyp_start": round(hyp[j][1], 3),
                        "hyp_end": round(hyp[j][2], 3),
                    }
                )
    n = len(words)

    def mean(k: str) -> float | None:
        errors = [abs(w[f"hyp_{k}"] - w[f"ref_{k}"]) for w in words]
        return round(1000 * sum(errors) / n, 1) if n else None

    return {
        "clip": GRID_ALIGN_CLIP,
        "ref_words": len(ref),
        "matched": n,
        "start_mae_ms": mean("start"),
        "end_mae_ms": mean("end"),
        "words": words,
    }


# ---------------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------------


def run_model(model: str, clips: list[dict], args) -> dict:
    from mmaffect.features.transcripts import clear_asr_cache, transcribe

    def asr(audio):
        return transcribe(
            audio,
            model=model,
            models_dir=MODELS,
            language=args.language,
            device=args.device,
            beam_size=args.beam_size,
            vad=not args.no_vad,
        )

    clear_asr_cache()
    t0 = time.perf_counter()
    asr(clips[0]["audio"])  # warm-up: loads the model (and VAD); result discarded
    load_seconds = time.perf_counter() - t0

    rows, spent, timing = [], 0.0, None
    for clip in clips:
        t0 = time.perf_counter()
        transcript = asr(clip["audio"])
        seconds = time.perf_counter() - t0
        spent += seconds
        ref = normalise(clip["reference"])
        hyp = normalise(transcript.text)
        counts = score(ref, hyp)
        raw = [normalise(t, spell_digits=False) for t in (clip["reference"], transcript.text)]
        counts_raw = score(*raw)
        rows.append(
            {
                "dataset": clip["dataset"],
                "clip": clip["path"].name,
                "audio_seconds": round(clip["audio"].duration, 3),
                "transcribe_seconds": round(seconds, 3),
                "reference": clip["reference"],
                "hypothesis": transcript.text,
                "reference_normalised": " ".join(ref),
                "hypothesis_normalised": " ".join(hyp),
                "ref_words": len(ref),
                "errors": counts["substitutions"] + counts["deletions"] + counts["insertions"],
                "counts": counts,
                "errors_raw": counts_raw["substitutions"]
                + counts_raw["deletions"]
                + counts_raw["insertions"],
                "counts_raw": counts_raw,
            }
        )
        if clip["dataset"] == "grid" and clip["path"].name == GRID_ALIGN_CLIP:
            timing = timing_error(transcript, clip["audio"].start_time)
            timing["audio_start_time"] = clip["audio"].start_time
            timing["clip_seconds"] = round(clip["audio"].duration, 3)
            timing["align_seconds"] = round(grid_alignment(keep_silence=True)[-1][1], 3)

    datasets = {}
    for name in dict.fromkeys(r["dataset"] for r in rows):
        subset = [r for r in rows if r["dataset"] == name]
        datasets[name] = {
            "clips": len(subset),
            **totals(subset),
            "wer_raw": totals(subset, "counts_raw")["wer"],
        }
    audio_seconds = sum(r["audio_seconds"] for r in rows)
    return {
        "load_seconds": round(load_seconds, 2),
        "transcribe_seconds": round(spent, 2),
        "audio_seconds": round(audio_seconds, 2),
        "x_realtime": round(audio_seconds / spent, 2),
        "datasets": datasets,
        "overall": {
            "clips": len(rows),
            **totals(rows),
            "wer_raw": totals(rows, "counts_raw")["wer"],
        },
        "timing": timing,
        "clips": rows,
    }


def print_report(result: dict) -> None:
    s, m = result["settings"], result["machine"]
    print(
        f"device {s['device']} ({s['compute_type']}), beam_size {s['beam_size']}, "
        f"VAD {'on' if s['vad'] else 'off'}, language {s['language']}; "
        f"cpu_count {m['cpu_count']}, faster-whisper {m['faster_whisper']}, "
        f"ctranslate2 {m['ctranslate2']}, jiwer {m['jiwer']}"
    )
    head = f"{'model':<17}{'dataset':<9}{'clips':>6}{'ref words':>10}{'WER':>8}"
    print(f"\n{head}{'S':>5}{'D':>5}{'I':>5}{'WER raw':>9}")
    for model, r in result["models"].items():
        for name, d in [*r["datasets"].items(), ("all", r["overall"])]:
            print(
                f"{model:<17}{name:<9}{d['clips']:>6}{d['ref_words']:>10}{d['wer']:>8.3f}"
                f"{d['substitutions']:>5}{d['deletions']:>5}{d['insertions']:>5}"
                f"{d['wer_raw']:>9.3f}"
            )
    print(f"\n{'model':<17}{'load s':>8}{'ASR s':>8}{'audio s':>9}{'x real time':>12}  timing")
    for model, r in result["models"].items():
        t = r["timing"]
        timing = "n/a (GRID align clip not scored)"
        if t is not None:
            timing = f"{t['clip']}: {t['matched']}/{t['ref_words']} words matched"
            if t["matched"]:
                timing += f", start MAE {t['start_mae_ms']} ms, end MAE {t['end_mae_ms']} ms"
        print(
            f"{model:<17}{r['load_seconds']:>8.2f}{r['transcribe_seconds']:>8.2f}"
            f"{r['audio_seconds']:>9.2f}{r['x_realtime']:>12.2f}  {timing}"
        )
    print(f"\nwall time {result['wall_seconds']:.1f} s")


def main(argv: list[str] | None = None) -> dict:
    from mmaffect.features.transcripts import DEFAULT_BEAM_SIZE

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="whisper-tiny.en,whisper-base")
    p.add_argument("--device", default="cpu")
    p.add_argument("--datasets", default=",".join(DATASETS))
    p.add_argument("--limit", type=int, default=None, help="at most N clips per dataset")
    p.add_argument("--beam-size", type=int, default=DEFAULT_BEAM_SIZE)
    p.add_argument("--no-vad", action="store_true", help="turn the toolkit's VAD off")
    p.add_argument("--language", default="en")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    wall0 = time.perf_counter()

    from mmaffect.features.transcripts import _default_compute_type
    from mmaffect.media.audio import load_audio

    loaders = {"lhotse": lhotse_clips, "grid": grid_clips, "ravdess": ravdess_clips}
    names = [d.strip() for d in args.datasets.split(",") if d.strip()]
    unknown = sorted(set(names) - set(loaders))
    if unknown:
        p.error(f"unknown dataset(s) {', '.join(unknown)}; choose from {', '.join(DATASETS)}")
    clips = []
    t0 = time.perf_counter()
    for name in names:
        for path, reference in loaders[name]()[: args.limit]:
            clips.append({"dataset": name, "path": path, "reference": reference})
            clips[-1]["audio"] = load_audio(path)
    decode_seconds = time.perf_counter() - t0
    if not clips:
        p.error("no clips selected")

    result = {
        "settings": {
            "models": args.models.split(","),
            "datasets": names,
            "limit": args.limit,
            "device": args.device,
            "compute_type": _default_compute_type(args.device),
            "beam_size": args.beam_size,
            "vad": not args.no_vad,
            "language": args.language,
            "models_dir": str(MODELS),
            "data": str(DATA),
        },
        "machine": {
            "cpu_count": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "faster_whisper": version("faster-whisper"),
            "ctranslate2": version("ctranslate2"),
            "jiwer": version("jiwer"),
        },
        "audio_decode_seconds": round(decode_seconds, 2),
        "models": {},
    }
    for model in result["settings"]["models"]:
        result["models"][model] = run_model(model, clips, args)
    result["wall_seconds"] = round(time.perf_counter() - wall0, 1)
    print_report(result)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n")
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
