"""The benchmark scripts' code paths run on a tiny input (no timing is asserted)."""

from __future__ import annotations

import json
import subprocess
import sys

from conftest import REPO, make_video


def test_decode_benchmark_runs(tmp_path):
    video = make_video(tmp_path / "v.mp4", seconds=1)
    out = tmp_path / "decode.json"
    subprocess.run(
        [
            sys.executable,
            str(REPO / "benchmarks" / "decode.py"),
            str(video),
            "--repeat",
            "1",
            "--json",
            str(out),
        ],
        check=True,
        capture_output=True,
    )
    figures = json.loads(out.read_text())
    assert figures["frames"] == 25
    for key in ("decode_null_fps", "rgb_full_fps", "rgb_224_fps", "audio_x_realtime"):
        assert figures[key] > 0
