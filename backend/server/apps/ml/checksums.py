import hashlib
from pathlib import Path


def sha256_bytes(data: bytes) -> str:
    """The hex sha256 of bytes already in memory (an artifact read once, then loaded)."""
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | Path) -> str:
    """The hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
