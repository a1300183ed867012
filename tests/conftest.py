"""Shared fixtures: where the real media and the pretrained weights live.

The real media are outside the repository (their licences forbid copying them in). Their
location defaults to ``../shared`` beside the checkout and can be moved with
``MMAFFECT_TEST_DATA`` (the ``data`` folder) and ``MMAFFECT_MODELS`` (the models folder).
A missing folder fails the test that needs it with a message; it never silently skips.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DEFAULT_SHARED = REPO.parent / "shared"


def _folder(env: str, default: Path, what: str) -> Path:
    path = Path(os.environ.get(env, default))
    if not path.is_dir():
        pytest.fail(
            f"{what} not found at {path}: put the shared folder beside the checkout "
            f"or set {env} to its location",
            pytrace=False,
        )
    return path


@pytest.fixture
def one_torch_thread():
    """PyTorch on one thread for the test: tiny models run fastest single-threaded (and far
    faster on a loaded 2-core machine). Modules use it with ``pytest.mark.usefixtures``."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real test media (``../shared/data``)."""
    return _folder("MMAFFECT_TEST_DATA", DEFAULT_SHARED / "data", "real test media")


@pytest.fixture(scope="session")
def models_dir() -> Path:
    """The pretrained weights folder (``../shared/models``)."""
    return _folder("MMAFFECT_MODELS", DEFAULT_SHARED / "models", "pretrained models folder")


def nonempty(paths: list[Path], what: str) -> list[Path]:
    """Fail loudly when a fixture glob matches nothing (a test over nothing always passes)."""
    if not paths:
        pytest.fail(f"no {what} found", pytrace=False)
    return paths


def ffmpeg_exe() -> str:
    from mmaffect.media.ffmpeg import ffmpeg_binary

    return ffmpeg_binary()


def run_ffmpeg(*args: str) -> None:
    """Run the project's ffmpeg quietly; fail the test if it fails."""
    import subprocess

    subprocess.run([ffmpeg_exe(), "-v", "error", "-y", *args], check=True)


def make_video(
    path: Path,
    *,
    seconds: float = 1.0,
    fps: str = "25",
    size: str = "160x120",
    audio: bool = True,
    vcodec: str = "libx264",
    extra: list[str] | None = None,
) -> Path:
    """Generate a small synthetic clip (test pattern + 440 Hz tone) with the project's ffmpeg."""
    import subprocess

    args = [
        ffmpeg_exe(),
        "-v",
        "error",
        "-y",
        "-f",
        "lavfi",
        "-i",
        f"testsrc2=size={size}:rate={fps}:duration={seconds}",
    ]
    if audio:
        args += ["-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=44100:duration={seconds}"]
    args += ["-c:v", vcodec, "-pix_fmt", "yuv420p"]
    if audio:
        args += ["-c:a", "aac" if path.suffix in (".mp4", ".mov", ".mkv") else "mp2"]
    args += [*(extra or []), str(path)]
    subprocess.run(args, check=True)
    return path


@pytest.fixture
def tiny_video(tmp_path: Path) -> Path:
    """A 1-second 25 fps 160x120 H.264 + AAC clip."""
    return make_video(tmp_path / "tiny.mp4")
