"""The artifact store: the one folder (``ML_ARTIFACTS_DIR``) model files are read from.

A model version records its artifact as a path inside the store plus the file's sha256. A path
that resolves (symbolic links followed) outside the store is refused when the model is
registered and again when it is loaded, so no registry write can point a worker at another file
on the host (``../../etc/passwd``, ``/proc/self/environ``). The store is written by the training
script only; in the image it belongs to root and the app reads it as another user.

Loading reads the file's bytes once, checks them against the recorded sha256, and builds the
model from those same bytes: the file cannot be swapped between the check and the load.
"""
from __future__ import annotations

from pathlib import Path

from django.conf import settings

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
        raise OutsideStore(f"{artifact_path!r} is not a path in the artifact store {root}")
    path = (root / artifact_path).resolve()
    if path == root or not path.is_relative_to(root):
        raise OutsideStore(f"{artifact_path!r} resolves to {path}, outside the artifact store "
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


def read_verified(artifact_path: str, expected_sha256: str) -> bytes:
    """The artifact's bytes, only if they are in the store and match ``expected_sha256``."""
    path, data = read(artifact_path)
    actual = sha256_bytes(data)
    if actual != expected_sha256:
        raise ChecksumMismatch(f"{path} has sha256 {actual}, but the registry expects "
                               f"{expected_sha256}: it was altered or replaced, and not loaded")
    return data
