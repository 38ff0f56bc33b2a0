"""Where model files come from: the bundled folder, and the artifact store.

- **Bundled** (``ML_ARTIFACTS_DIR``): what the training script wrote, baked into every image. A
  model version records its file as a path inside that folder plus the file's sha256. A path
  that resolves (symbolic links followed) outside the folder is refused when the model is
  registered and again when it is loaded, so no registry write can point a worker at another
  file on the host (``../../etc/passwd``, ``/proc/self/environ``). The folder is written by the
  training script only; in the image it belongs to root and the app reads it as another user.
- **The artifact store** (``STORAGES["artifacts"]``: a local folder by default, any
  S3-compatible object store in production): where uploaded versions live, under a name the
  service makes from the file's sha256 (``models/<sha256>.onnx``), never one a client chose. A
  replica that lacks a file fetches it from the store on first use, checks it, and keeps it in
  ``ARTIFACT_CACHE_DIR`` under its checksum; a cached file is checked again before each load.
  The cache holds at most ``ARTIFACT_CACHE_MAX_BYTES``: the files least recently loaded go first.
  The workers of a replica fetch a given file one at a time (a lock file per checksum), so the
  first fetches it and the others find it cached.

Loading reads the bytes once, checks them against the recorded sha256, and builds the model
from those same bytes: the file cannot be swapped between the check and the load, and a file
altered in the store (or the cache) is refused.
"""
from __future__ import annotations

import fcntl
import os
import re
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import storages

from apps.ml.checksums import sha256_bytes


class ArtifactError(Exception):
    """What is wrong with an artifact, in words fit for the log (they name paths)."""


class OutsideStore(ArtifactError):
    pass


class Missing(ArtifactError):
    pass


class ChecksumMismatch(ArtifactError):
    pass


def store_root() -> Path:
    return Path(settings.ML_ARTIFACTS_DIR).resolve()


def resolve(artifact_path: str) -> Path:
    """The file ``artifact_path`` names: relative to the store (or absolute inside it)."""
    root = store_root()
    if not artifact_path or "\x00" in artifact_path:
        raise OutsideStore(f"{artifact_path!r} is not a path in the bundled folder {root}")
    path = (root / artifact_path).resolve()
    if path == root or not path.is_relative_to(root):
        raise OutsideStore(f"{artifact_path!r} resolves to {path}, outside the bundled folder "
                           f"{root}")
    return path


def relative(path: Path) -> str:
    """How the registry records a resolved artifact: its path inside the store."""
    return path.relative_to(store_root()).as_posix()


def read(artifact_path: str) -> tuple[Path, bytes]:
    """The resolved path of an artifact in the store, and its bytes, read once."""
    path = resolve(artifact_path)
    try:
        return path, path.read_bytes()
    except OSError as exc:  # missing, a folder, unreadable, a name too long...
        raise Missing(f"{path} is missing or unreadable ({type(exc).__name__}: "
                      f"{exc.strerror})") from None


BUNDLED, STORE = "bundled", "store"
SOURCES = (BUNDLED, STORE)  # MLModel.artifact_source


def read_verified(artifact_path: str, expected_sha256: str, source: str = BUNDLED) -> bytes:
    """The artifact's bytes, only if they come from where ``source`` says and match
    ``expected_sha256``."""
    if source == STORE:
        return _fetch_verified(artifact_path, expected_sha256)
    path, data = read(artifact_path)
    _check(data, expected_sha256, str(path))
    return data


def _check(data: bytes, expected_sha256: str, where: str) -> None:
    actual = sha256_bytes(data)
    if actual != expected_sha256:
        raise ChecksumMismatch(f"{where} has sha256 {actual}, but the registry expects "
                               f"{expected_sha256}: it was altered or replaced, and not loaded")


# What the service names a stored artifact: nothing else is ever read from the store.
STORED_NAME = re.compile(r"models/([0-9a-f]{64})\.(onnx)")


def store() -> "Storage":  # noqa: F821 - django.core.files.storage.Storage
    return storages["artifacts"]


def store_name(sha256: str, artifact_format: str) -> str:
    return f"models/{sha256}.{artifact_format}"


def save_to_store(data: bytes, sha256: str, artifact_format: str) -> str:
    """Put an artifact in the store under its checksum's name, and return that name. The same
    bytes twice are one object: a copy already there and intact is left alone (never rewritten
    under versions that use it); a damaged one is replaced."""
    name = store_name(sha256, artifact_format)
    if not _stored_intact(name, sha256):
        saved = store().save(name, ContentFile(data))
        if saved != name:  # a storage that renamed instead of overwriting: not ours to guess
            raise ArtifactError(f"the artifact store saved {name!r} as {saved!r}")
    _cache_put(sha256, data)  # this replica need not fetch what it just stored
    return name


def _stored_intact(name: str, sha256: str) -> bool:
    try:
        return store().exists(name) and sha256_bytes(_read_stored(name)) == sha256
    except Missing:
        return False


def _read_stored(name: str) -> bytes:
    """A stored object's bytes; Missing if it is absent, unreadable or over the upload limit
    (checked before reading: a replaced object must not fill a worker's memory)."""
    try:
        size = store().size(name)
        if size > settings.MAX_ARTIFACT_BYTES:
            raise Missing(f"the artifact store's {name!r} has {size} bytes, over "
                          f"MAX_ARTIFACT_BYTES")
        with store().open(name, "rb") as stored:
            return stored.read(settings.MAX_ARTIFACT_BYTES + 1)
    except Missing:
        raise
    except Exception as exc:  # noqa: BLE001 - whatever the storage backend raises
        raise Missing(f"the artifact store could not give {name!r} "
                      f"({type(exc).__name__}: {exc})") from None


def _fetch_verified(name: str, expected_sha256: str) -> bytes:
    """A stored artifact's bytes: from this replica's cache when it holds a good copy, else from
    the store (then cached). Anything but the service's own names is refused."""
    match = STORED_NAME.fullmatch(name or "")
    if match is None or match[1] != expected_sha256:
        raise OutsideStore(f"{name!r} is not the name of a stored artifact with sha256 "
                           f"{expected_sha256}")
    data = _cache_get(expected_sha256)
    if data is None:
        with _fetching(expected_sha256):  # the replica's other workers wait, then find it cached
            data = _cache_get(expected_sha256)
            if data is None:
                data = _read_stored(name)
                _check(data, expected_sha256, f"the artifact store's {name!r}")
                _cache_put(expected_sha256, data)
    return data


def _cache_path(sha256: str) -> Path:
    return Path(settings.ARTIFACT_CACHE_DIR) / sha256


PARTIAL, LOCK = ".partial-", ".lock-"
# A partial file this old was left by a worker killed while writing it.
ABANDONED_AFTER = 3600


@contextmanager
def _fetching(sha256: str):
    """Held while one worker fetches an artifact: the replica's other workers wait for it (an
    advisory lock on a file in the cache folder). A folder that cannot be written only costs the
    wait: each worker then fetches for itself."""
    folder = Path(settings.ARTIFACT_CACHE_DIR)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        lock = open(folder / f"{LOCK}{sha256}", "a")  # noqa: SIM115 - closed below
    except OSError:
        yield
        return
    with lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file is closed
        yield


def _cache_get(sha256: str) -> bytes | None:
    """The cached copy's bytes if they are intact (its use is recorded, for eviction); a damaged
    copy is removed."""
    cached = _cache_path(sha256)
    try:
        data = cached.read_bytes()
    except OSError:
        return None
    if sha256_bytes(data) != sha256:
        cached.unlink(missing_ok=True)
        return None
    _touch(cached)  # most recently used
    return data


def _touch(path: Path) -> None:
    """Record a use in the file's mtime, to the nanosecond (the kernel's own file times are
    coarser, and uses in the same few milliseconds would tie)."""
    now = time.time_ns()
    try:
        os.utime(path, ns=(now, now))
    except OSError:
        pass


def _cache_put(sha256: str, data: bytes) -> None:
    """Keep a checked artifact on local disk, written whole or not at all (a temporary file
    renamed into place, so a concurrent reader never sees half a file), then trim the cache to
    its limit. A file over the limit by itself is not kept."""
    limit = settings.ARTIFACT_CACHE_MAX_BYTES
    folder = Path(settings.ARTIFACT_CACHE_DIR)
    temporary = None
    try:
        folder.mkdir(parents=True, exist_ok=True)
        if len(data) > limit:  # the others still trimmed to the limit (0: none kept)
            _trim(folder, limit, replacing="")
            return
        _trim(folder, limit - len(data), replacing=sha256)
        with tempfile.NamedTemporaryFile(dir=folder, delete=False, prefix=PARTIAL) as out:
            temporary = out.name
            out.write(data)
        os.replace(temporary, folder / sha256)
        _touch(folder / sha256)
    except OSError:  # a cache that cannot be written costs a fetch per load, nothing else
        if temporary:
            Path(temporary).unlink(missing_ok=True)


CACHED_NAME = re.compile(r"[0-9a-f]{64}")


def _trim(folder: Path, room: int, replacing: str) -> None:
    """Remove cached files, least recently loaded first, until they take at most ``room`` bytes
    (the file ``replacing`` is about to be written over, so it does not count); partial files
    abandoned by a killed worker go too. Only the cache's own files are touched: checksums and
    partial files. Another worker's concurrent trim or read is harmless: a removed file is
    fetched again, and an open one stays readable."""
    now, cached = time.time(), []
    for entry in os.scandir(folder):
        try:
            stat = entry.stat(follow_symlinks=False)
        except OSError:
            continue
        if entry.name.startswith(PARTIAL) and now - stat.st_mtime > ABANDONED_AFTER:
            Path(entry.path).unlink(missing_ok=True)
        elif (CACHED_NAME.fullmatch(entry.name) and entry.name != replacing
              and entry.is_file(follow_symlinks=False)):
            cached.append((stat.st_mtime_ns, stat.st_size, entry.path))
    total = sum(size for _, size, _ in cached)
    for _, size, path in sorted(cached):
        if total <= room:
            break
        Path(path).unlink(missing_ok=True)
        total -= size
