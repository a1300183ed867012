"""Speed per stage and end to end (extract + predict), against the decode-only floor.

Usage::

    python benchmarks/speed.py [VIDEO ...] [--seconds 120] [--device cpu|cuda]
                               [--detect-size 640] [--detect-every 4]
                               [--frame-backbone NAME [--frame-crop N]] [--no-overlap-check]
                               [--json F]

Defaults are the toolkit's: detection on every 4th frame at 640 px (interpolated between
agreeing key frames) and the shipped face model as the frame branch.

Without VIDEO it makes two test videos of ``--seconds`` seconds from the RAVDESS clip in
``../shared/data`` (a speaking face): the clip repeated (1280x720, stream copy) and the same
scaled to a 640x360 H.264 + AAC video. Per video, every phase runs in its own process (its peak
memory is its own, ffmpeg included):

1. ``decode``: the frames as RGB at full size through the pipe, nothing else (the floor);
2. ``pipeline``: into an empty cache, ``mmaffect.extract`` of all four modalities (face
   detection, frame branch, blendshapes + head pose, alignment, expression, ASR, speech
   features, word embeddings: each stage's time from the extract report), then
   ``mmaffect.predict`` with the baseline predictor on the cached features (``model``:
   outputs for every frame; ``write``: predictions, table and challenge files), then the
   ``fusion`` network (all four branches, the ABAW3 recipe's sizes, 60-frame windows) over a
   window centred on every frame: untrained weights, which run exactly as fast as trained ones.
   End to end = extract + predict;
3. ``serial`` (first video only, unless ``--no-overlap-check``): the same extraction with
   ``ExtractOptions(overlap=False)``: decoding no longer runs ahead of the networks and the
   audio side (ASR, speech, words) runs after the vision side instead of beside it.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from _common import (
    MODELS,
    RAVDESS_CLIP,
    child,
    data_path,
    machine,
    print_table,
    repeat_clip,
    write_json,
)

from mmaffect.faces import DEFAULT_DETECT_EVERY

ALL = "frame,clip,speech,word"


def phase_decode(video: Path) -> dict:
    from mmaffect.media import iter_frames, probe

    info = probe(video)
    start = time.perf_counter()
    n = sum(len(c) for c in iter_frames(video, info=info))
    return {"frames": n, "seconds": time.perf_counter() - start}


def extract_options(args, overlap: bool):
    from mmaffect.extraction import ExtractOptions, parse_modalities
    from mmaffect.features.vision import FaceConfig, FrameConfig

    return ExtractOptions(
        modalities=parse_modalities(args.modalities),
        device=args.device,
        models_dir=MODELS,
        overlap=overlap,
        face=FaceConfig(max_side=args.detect_size, detect_every=args.detect_every),
        frame=FrameConfig.choose(args.frame_backbone, args.frame_crop),
    )


def fusion_speed(cache: Path, video_id: str, device: str) -> dict:
    """The fusion network over a 60-frame window centred on every frame of the video, as
    ``predict --checkpoint`` runs it (its window batch; on CUDA autocast and the windows cut
    on the device)."""
    import torch
    import yaml

    from mmaffect.extraction import parse_modalities
    from mmaffect.predict.compute import inference_autocast, window_batch
    from mmaffect.training.dataset import WindowDataset, make_loader
    from mmaffect.training.module import AffectModule

    recipe = yaml.safe_load((Path(__file__).parents[1] / "pipelines/fusion_mtl.yaml").read_text())
    modalities = parse_modalities(ALL)
    module = AffectModule(
        "fusion", recipe["model_hparams"], task="mtl", modalities=modalities, window=60
    )
    module.eval().to(device)
    start = time.perf_counter()
    ds = WindowDataset(cache, [video_id], modalities, window=60)
    if device.startswith("cuda"):
        batches = ds.device_batches(window_batch(device), device)
    else:
        batches = make_loader(ds, batch_size=window_batch(device), shuffle=False)
    frames = 0
    with torch.inference_mode(), inference_autocast(device):
        for batch in batches:
            batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
            out = module(batch)
            frames += out["expr"].shape[0]
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return {"frames": frames, "seconds": time.perf_counter() - start}


def memory_now() -> dict[str, float]:
    """This process's resident memory now, in MB: anonymous (heaps, tensors) and file-backed
    (mapped files: libraries, models, the feature cache's memory-mapped arrays). Linux only."""
    try:
        lines = Path("/proc/self/status").read_text().splitlines()
    except OSError:
        return {}
    fields = dict(line.split(":", 1) for line in lines if ":" in line)
    return {
        k: round(int(fields[k].split()[0]) / 1024, 1) for k in ("RssAnon", "RssFile") if k in fields
    }


def phase_pipeline(video: Path, cache: Path, out: Path, args, overlap: bool) -> dict:
    import torch
    from rich.console import Console

    import mmaffect
    from mmaffect.extraction import parse_modalities
    from mmaffect.predict.run import PredictOptions, predict

    quiet = Console(stderr=True, quiet=True)
    options = extract_options(args, overlap)
    start = time.perf_counter()
    ext = mmaffect.extract([video], cache=cache, options=options, progress=False, console=quiet)
    t_extract = time.perf_counter() - start
    if ext.exit_code:
        raise SystemExit(f"extract failed on {video}")
    result = {"extract_seconds": t_extract, "stages": ext.stages, "memory": memory_now()}
    if not overlap or options.modalities != parse_modalities(ALL):
        return result  # extraction alone
    t0 = time.perf_counter()
    opts = PredictOptions(cache=cache, device=args.device, extract=options)
    rep = predict([video], out, opts, progress=False, console=quiet)
    if rep.exit_code:
        raise SystemExit(f"predict failed on {video}")
    result["predict_seconds"] = time.perf_counter() - t0
    result["predict_stages"] = rep.stages
    result["fusion"] = fusion_speed(cache, video.stem, args.device)
    result["torch_threads"] = torch.get_num_threads()
    result["memory"] = memory_now()
    return result


def measure(video: Path, args, serial: bool, tmp: Path) -> dict:
    from mmaffect.media import probe

    v = probe(video).require_video()
    seconds = v.frames / float(v.fps)
    common = ["--device", args.device, "--detect-size", args.detect_size]
    common += ["--detect-every", args.detect_every]
    if args.frame_backbone:
        common += ["--frame-backbone", args.frame_backbone]
    if args.frame_crop:
        common += ["--frame-crop", args.frame_crop]
    me = Path(__file__)
    decode = child(me, [video, "--phase", "decode", *common])
    runs = {}
    for name in ("pipeline", "serial") if serial else ("pipeline",):
        cache, out = tmp / f"{video.stem}-{name}-cache", tmp / f"{video.stem}-{name}-out"
        runs[name] = child(me, [video, "--phase", name, "--cache", cache, "--out", out, *common])
    p = runs["pipeline"]
    decode_fps = decode["frames"] / decode["seconds"]
    end_to_end = p["extract_seconds"] + p["predict_seconds"]
    stages = {k: dict(s) for k, s in p["stages"].items()}
    for k, s in p["predict_stages"].items():
        stages[f"predict: {k}"] = s
    stages["fusion network (4 branches)"] = {
        "seconds": round(p["fusion"]["seconds"], 3),
        "items": p["fusion"]["frames"],
    }
    figures = {
        "video": f"{video.name} {v.width}x{v.height} {float(v.fps):.2f} fps, {v.frames} frames, "
        f"{seconds:.1f} s",
        "frames": v.frames,
        "decode_fps": round(decode_fps, 1),
        "extract_seconds": round(p["extract_seconds"], 1),
        "predict_seconds": round(p["predict_seconds"], 1),
        "end_to_end_seconds": round(end_to_end, 1),
        "end_to_end_fps": round(v.frames / end_to_end, 2),
        "end_to_end_x_realtime": round(seconds / end_to_end, 3),
        "end_to_end_vs_decode": round(v.frames / end_to_end / decode_fps, 4),
        "peak_rss_mb": max(p["peak_rss_mb"], decode["peak_rss_mb"]),
        "torch_threads": p["torch_threads"],
        "stages": stages,
    }
    if "serial" in runs:
        s = runs["serial"]
        figures["extract_serial_seconds"] = round(s["extract_seconds"], 1)
        figures["overlap_saves"] = round(1 - p["extract_seconds"] / s["extract_seconds"], 3)
    return figures


def print_video(f: dict) -> None:
    print(f"\n{f['video']}")
    for key, value in f.items():
        if key not in ("video", "stages"):
            print(f"  {key:<24} {value}")
    rows = [
        {
            "stage": name,
            "seconds": f"{s['seconds']:.2f}",
            "items": s["items"] or "-",
            "items/s": f"{s['items'] / s['seconds']:.1f}" if s["items"] and s["seconds"] else "-",
        }
        for name, s in sorted(f["stages"].items(), key=lambda kv: -kv[1]["seconds"])
    ]
    print_table(rows, ["stage", "seconds", "items", "items/s"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("videos", nargs="*", type=Path)
    parser.add_argument("--seconds", type=float, default=120, help="length of the test videos")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--detect-size", type=int, default=640)
    parser.add_argument("--detect-every", type=int, default=DEFAULT_DETECT_EVERY)
    parser.add_argument("--frame-backbone", help="a registry backbone instead of the face model")
    parser.add_argument("--frame-crop", type=int, default=None, help="with --frame-backbone")
    parser.add_argument("--no-overlap-check", action="store_true")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--phase", help=argparse.SUPPRESS)
    parser.add_argument("--cache", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    # a subset of the branches: the pipeline phase then extracts those only (benchmarks/growth.py)
    parser.add_argument("--modalities", default=ALL, help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as the mmaffect CLI does
    if args.phase:
        video = args.videos[0]
        if args.phase == "decode":
            result = phase_decode(video)
        else:
            result = phase_pipeline(video, args.cache, args.out, args, args.phase == "pipeline")
        print(json.dumps(result))
        return

    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        videos = args.videos
        if not videos:
            clip = data_path(RAVDESS_CLIP)
            videos = [
                repeat_clip(clip, args.seconds, tmp / "ravdess_720p.mp4"),
                repeat_clip(clip, args.seconds, tmp / "ravdess_360p.mp4", scale="640:360"),
            ]
        results = [
            measure(v, args, serial=i == 0 and not args.no_overlap_check, tmp=tmp)
            for i, v in enumerate(videos)
        ]
    for f in results:
        print_video(f)
    figures = {
        "device": args.device,
        "detect_size": args.detect_size,
        "detect_every": args.detect_every,
        "frame_branch": args.frame_backbone or "the shipped face model",
        "frame_crop": args.frame_crop or "the network's own",
        **machine(),
        "videos": results,
        "total_seconds": round(time.perf_counter() - start, 1),
    }
    print(f"\ntotal_seconds {figures['total_seconds']}")
    write_json(args.json, figures)


if __name__ == "__main__":
    main()
