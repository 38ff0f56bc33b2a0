"""The UCI Adult data: where the files live, their checksums, and reading them as rows.

The files are never committed. They are looked for in a data directory (``ADULT_DATA_DIR``,
default ``research/data``); a missing file is downloaded from the UCI repository, and when that
fails the error says where to put it. Every file is checked against its published sha256 before it
is read, so a truncated download or an edited copy never trains a model silently.
"""
from __future__ import annotations

import csv
import os
import shutil
import sys
import urllib.request
from pathlib import Path
from typing import Iterator

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "backend" / "server"))

from apps.ml.checksums import sha256_file as sha256_of  # noqa: E402
from apps.ml.income_classifier.preprocessing import (  # noqa: E402, F401 (EXAMPLE_ROW: for
    EXAMPLE_ROW, FEATURES, NUMERIC, TARGET,                # tests and benchmarks)
)

DEFAULT_DATA_DIR = ROOT / "research" / "data"
UCI_URL = "https://archive.ics.uci.edu/ml/machine-learning-databases/adult/"
SHA256 = {
    "adult.data": "5b00264637dbfec36bdeaab5676b0b309ff9eb788d63554ca0a249491c86603d",
    "adult.test": "a2a9044bc167a35b2361efbabec64e89d69ce82d9790d2980119aac5fd7e9c05",
}
COLUMNS = FEATURES + (TARGET,)



class DataError(RuntimeError):
    pass


def data_dir() -> Path:
    return Path(os.environ.get("ADULT_DATA_DIR") or DEFAULT_DATA_DIR)


def download(name: str, directory: Path, base_url: str | None = None, timeout: float = 30) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / name
    partial = target.with_suffix(target.suffix + ".part")
    url = (base_url or UCI_URL) + name
    print(f"downloading {url} -> {target}", flush=True)
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, open(partial, "wb") as out:
            shutil.copyfileobj(response, out)
    except OSError as exc:
        partial.unlink(missing_ok=True)
        raise DataError(
            f"{name} is not in {directory} and could not be downloaded from {url} ({exc}).\n"
            f"Put the UCI Adult files adult.data and adult.test in {directory} "
            f"(or point ADULT_DATA_DIR at a folder holding them) and run again."
        ) from exc
    partial.replace(target)
    return target


def ensure_file(name: str, directory: Path | None = None, base_url: str | None = None) -> Path:
    """The verified path of one data file, downloading it first when it is missing."""
    directory = directory or data_dir()
    path = directory / name
    if not path.exists():
        path = download(name, directory, base_url)
    actual = sha256_of(path)
    if actual != SHA256[name]:
        raise DataError(
            f"{path} has sha256 {actual}, expected {SHA256[name]}: the file is damaged or not the "
            f"UCI original. Delete it to download it again, or replace it with the original."
        )
    return path


def read_rows(path: Path) -> Iterator[dict]:
    """Rows of an Adult file as dicts of typed values; skips adult.test's header and blank lines.

    Labels lose adult.test's trailing period; missing values stay "?" for preprocessing to fill.
    """
    with open(path, newline="") as f:
        for record in csv.reader(f, skipinitialspace=True):
            if len(record) != len(COLUMNS):
                continue  # the trailing empty line, and adult.test's "|1x3 Cross validator"
            row = dict(zip(COLUMNS, record))
            for name in NUMERIC:
                row[name] = int(row[name])
            row[TARGET] = row[TARGET].rstrip(".")
            yield row


def load(name: str, directory: Path | None = None) -> list[dict]:
    return list(read_rows(ensure_file(name, directory)))
