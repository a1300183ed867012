"""How a face corpus frames its faces, in units of the face detector's box: the crop scale a
model trained on that corpus needs on video frames.

Usage::

    python benchmarks/face_crop.py [--corpus images/fer2013/publictest] [--every 12] [--json F]

Each face image (e.g. a 48x48 FER2013 face) is upscaled to 192 px and put in the middle of a
384x384 black canvas, RetinaFace (the detector ``extract`` uses) finds the face, and the ratio
"image side / longer side of the detected box" is the box scale at which a video frame's face
is cut like the corpus cuts its faces (:class:`mmaffect.faces.crops.FaceCrop` ``box``). The
median over the corpus is the choice. FER2013 **PublicTest** is the default: the crop is chosen
on faces that no reported figure uses (RAVDESS actor 05 and PrivateTest are reported).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from _common import MODELS, data_path

SIDE, CANVAS = 192, 384


def _canvases(files: list[Path]) -> np.ndarray:
    from PIL import Image

    out = np.zeros((len(files), CANVAS, CANVAS, 3), np.uint8)
    at = (CANVAS - SIDE) // 2
    for i, f in enumerate(files):
        with Image.open(f) as im:
            face = im.convert("RGB").resize((SIDE, SIDE), Image.Resampling.BILINEAR)
        out[i, at : at + SIDE, at : at + SIDE] = np.asarray(face)
    return out


def framing(files: list[Path], batch: int = 16) -> tuple[np.ndarray, int]:
    """Per image with a detected face: image side / longer box side; and the images without."""
    from mmaffect.faces.retinaface import load_retinaface
    from mmaffect.store import resolve

    detector = load_retinaface(resolve("retinaface_mobilenet0.25", MODELS), device="cpu")
    ratios, missed = [], 0
    for start in range(0, len(files), batch):
        for det in detector.detect(_canvases(files[start : start + batch])):
            if len(det) == 0:
                missed += 1
                continue
            box = det.boxes[int(np.argmax(det.scores))]
            ratios.append(SIDE / max(box[2] - box[0], box[3] - box[1]))
    return np.array(ratios), missed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", default="images/fer2013/publictest")
    parser.add_argument("--every", type=int, default=12, help="use every Nth image")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    files = sorted(data_path(args.corpus).glob("*/*.jpg"))[:: args.every]
    if not files:
        raise SystemExit(f"no images in {args.corpus}")
    ratios, missed = framing(files)
    q25, median, q75 = np.percentile(ratios, [25, 50, 75])
    result = {
        "corpus": args.corpus,
        "images": len(files),
        "no_face": missed,
        "ratio_median": round(float(median), 3),
        "ratio_iqr": [round(float(q25), 3), round(float(q75), 3)],
        "box_scale": round(float(median), 2),
    }
    print(f"{args.corpus}: {len(files)} images, no face found in {missed}")
    print(f"image side / detector box side: median {median:.3f} (IQR {q25:.3f}-{q75:.3f})")
    print(f"=> crop {{kind: box, scale: {median:.2f}}} frames video faces as this corpus does")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
