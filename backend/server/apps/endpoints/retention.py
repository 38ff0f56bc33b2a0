"""Keeping the request log bounded: the requests older than some days are deleted in batches,
and written to an archive file first when one is named.

Every prediction is stored, so the log grows with traffic (README, "What scale costs"). Pruning
runs beside live traffic, so it never holds a long lock: each batch is its own short
transaction that picks the oldest ``batch_size`` requests by (created_at, id), locks just those
rows, archives them if asked, and deletes them by id. New requests are never touched (they are
newer than the cutoff), and feedback on an old request waits for at most one batch. The next
batch starts where the last one ended (keyset pagination), so it does not scan again over the
index entries of the rows just deleted.

Requests of a running A/B test (``ab_test.ended_at`` is NULL) are kept whatever their age: the
test's live results, its Thompson shares and its auto-stop are counted from them, and deleting
some would change the test's outcome. They become prunable once the test stops (a stopped
test's results are frozen in ``ABTest.results``).

A request's shadow predictions are deleted with it, first and in its batch: the database's
foreign key has no ON DELETE CASCADE (Django emulates the model's CASCADE in Python, which would
load every request first), so the deletes are two plain statements by id.

The archive is gzip JSON lines, one gzip member per batch (readers such as ``zcat`` and Python's
``gzip`` read the members as one stream). A batch's member is written, flushed and fsynced
before its rows are deleted, so a crash loses nothing: a batch whose member is not complete was
not deleted, and the next run cuts the unfinished member off the end of the file and archives
those requests again. A crash after the fsync but before the delete commits leaves those
requests both archived and in the database; the next run archives them again, so an archive
can hold a request twice (the same id): keep the last line of each id.
"""
from __future__ import annotations

import gzip
import json
import os
import time
import zlib
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Callable

from django.db import connection, transaction
from django.db.models import Q
from django.utils import timezone

from apps.endpoints.exceptions import InvalidInput
from apps.endpoints.models import ABTest, MLRequest, ShadowPrediction

DEFAULT_BATCH_SIZE = 5000
# A batch is one transaction holding its rows' locks: larger batches hold them longer, and its
# ids travel as query parameters (SQLite takes at most 32,766).
MAX_BATCH_SIZE = 10_000

REQUEST_FIELDS = ("id", "mlmodel_id", "ab_test_id", "input_data", "full_response", "response",
                  "feedback", "feedback_at", "created_at")
SHADOW_FIELDS = ("id", "mlmodel_id", "full_response", "response", "created_at")


@dataclass
class PruneBatch:
    number: int
    requests: int  # deleted (or, in a dry run, that would be)
    shadow_predictions: int
    archived: int
    newest: datetime  # created_at of the batch's newest request
    seconds: float  # the batch's transaction, so the longest any of its rows was locked


@dataclass
class PruneResult:
    cutoff: datetime
    dry_run: bool
    archive: Path | None
    batches: list[PruneBatch] = field(default_factory=list)
    kept_running: int = 0  # older requests kept because a running A/B test counts them
    archive_cut_bytes: int = 0  # an unfinished batch cut off the archive's end before writing

    @property
    def requests(self) -> int:
        return sum(b.requests for b in self.batches)

    @property
    def shadow_predictions(self) -> int:
        return sum(b.shadow_predictions for b in self.batches)

    @property
    def archived(self) -> int:
        return sum(b.archived for b in self.batches)


def mlrequests_prune(
    *,
    older_than_days: int,
    batch_size: int = DEFAULT_BATCH_SIZE,
    archive: Path | None = None,
    dry_run: bool = False,
    on_batch: Callable[[PruneBatch], None] | None = None,
) -> PruneResult:
    """Delete the requests created more than ``older_than_days`` days ago, oldest first,
    ``batch_size`` at a time, except those of running A/B tests; with ``archive``, append each
    batch to that gzip JSON-lines file first. ``dry_run`` deletes and writes nothing and reports
    the batches it would delete. ``on_batch`` is told of each batch once it has committed.

    Call it outside a transaction (the command does): inside one, the batches would be
    savepoints of it, and their locks would last until it ends.
    """
    if isinstance(older_than_days, bool) or not isinstance(older_than_days, int) \
            or older_than_days < 1:
        raise InvalidInput(f"the age must be a whole number of days, at least 1; got "
                           f"{older_than_days!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) \
            or not 1 <= batch_size <= MAX_BATCH_SIZE:
        raise InvalidInput(f"the batch size must be from 1 to {MAX_BATCH_SIZE}; got "
                           f"{batch_size!r}")
    cutoff = timezone.now() - timedelta(days=older_than_days)
    result = PruneResult(cutoff=cutoff, dry_run=dry_run, archive=None if dry_run else archive)
    running = ABTest.objects.filter(ended_at__isnull=True).values("pk")
    old = MLRequest.objects.filter(created_at__lt=cutoff).exclude(ab_test__in=running)
    writer = None
    if archive is not None and not dry_run:
        writer = _Archive(Path(archive))
        result.archive_cut_bytes = writer.cut_bytes
    try:
        after: tuple[datetime, int] | None = None
        while True:
            started = time.perf_counter()
            page = old.order_by("created_at", "id")
            if after is not None:  # (created_at, id) > after, the first part for the index
                page = page.filter(Q(created_at__gt=after[0]) | Q(id__gt=after[1]),
                                   created_at__gte=after[0])
            with transaction.atomic():
                if not dry_run:
                    page = page.select_for_update()
                fields = REQUEST_FIELDS if writer else ("id", "created_at")
                rows = list(page.values(*fields)[:batch_size])
                if not rows:
                    break
                ids = [row["id"] for row in rows]
                if writer:
                    writer.append(_archive_lines(rows))
                if dry_run:
                    shadows = ShadowPrediction.objects.filter(mlrequest_id__in=ids).count()
                    deleted = len(ids)
                else:  # the shadows first: their foreign key is checked at commit all the same
                    shadows = _delete(ShadowPrediction, "mlrequest_id", ids)
                    deleted = _delete(MLRequest, "id", ids)
            after = (rows[-1]["created_at"], rows[-1]["id"])
            batch = PruneBatch(number=len(result.batches) + 1, requests=deleted,
                               shadow_predictions=shadows, archived=len(ids) if writer else 0,
                               newest=after[0], seconds=time.perf_counter() - started)
            result.batches.append(batch)
            if on_batch:
                on_batch(batch)
    finally:
        if writer:
            writer.close()
    result.kept_running = MLRequest.objects.filter(created_at__lt=cutoff,
                                                   ab_test__in=running).count()
    return result


# One statement per table and batch, the ids in one parameter whatever their number.
_DELETE = {
    "postgresql": "DELETE FROM {table} WHERE {column} = ANY(%s::bigint[])",
    "sqlite": "DELETE FROM {table} WHERE {column} IN (SELECT value FROM json_each(%s))",
}


def _delete(model, column: str, ids: list[int]) -> int:
    """Delete ``model``'s rows whose ``column`` is one of ``ids``; how many there were."""
    sql = _DELETE.get(connection.vendor)
    if sql is None:  # a database this project does not run on: the ORM's own way
        return model.objects.filter(**{f"{column}__in": ids}).delete()[1].get(
            model._meta.label, 0)
    quote = connection.ops.quote_name
    with connection.cursor() as cursor:
        cursor.execute(sql.format(table=quote(model._meta.db_table), column=quote(column)),
                       [ids if connection.vendor == "postgresql" else json.dumps(ids)])
        return cursor.rowcount


def _archive_lines(rows: list[dict]) -> bytes:
    """The requests as JSON lines, each with its shadow predictions."""
    shadows: dict[int, list[dict]] = {}
    for shadow in (ShadowPrediction.objects.filter(mlrequest_id__in=[r["id"] for r in rows])
                   .order_by("id").values("mlrequest_id", *SHADOW_FIELDS)):
        shadows.setdefault(shadow.pop("mlrequest_id"), []).append(shadow)
    return "".join(
        json.dumps({**row, "shadow_predictions": shadows.get(row["id"], [])},
                   default=_json_default, separators=(",", ":")) + "\n"
        for row in rows).encode()


def _json_default(value):
    if isinstance(value, (datetime, date)):
        return value.isoformat()  # to the microsecond (DjangoJSONEncoder stops at milliseconds)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


class _Archive:
    """An append-only gzip JSON-lines file: one gzip member per batch, on disk (fsynced) before
    the batch's rows are deleted."""

    def __init__(self, path: Path):
        self.path = path
        existed = path.exists()
        try:
            self.cut_bytes = _cut_unfinished_member(path) if existed else 0
            self.file = open(path, "ab")
            if not existed:  # the new file's name must survive a crash too
                _fsync_directory(path.parent)
        except OSError as exc:
            raise InvalidInput(f"cannot write the archive {path}: {exc.strerror or exc}") from exc

    def append(self, lines: bytes) -> None:
        self.file.write(gzip.compress(lines, compresslevel=6))
        self.file.flush()
        os.fsync(self.file.fileno())

    def close(self) -> None:
        self.file.close()


def _cut_unfinished_member(path: Path) -> int:
    """Truncate ``path`` after its last whole gzip member; how many bytes were cut.

    Only a crash while a batch was being written leaves a partial (or damaged) member at the
    end, and that batch was not deleted. A file that does not start with a whole gzip member is
    refused: it is not an archive this module wrote.
    """
    size = path.stat().st_size
    whole = _whole_members_length(path)
    if size and whole == 0:
        raise InvalidInput(f"{path} is not a gzip archive (or holds no whole batch); "
                           f"name another file")
    if whole < size:
        with open(path, "r+b") as f:
            f.truncate(whole)
            f.flush()
            os.fsync(f.fileno())
    return size - whole


def _whole_members_length(path: Path) -> int:
    """How many bytes at the start of ``path`` are whole gzip members."""
    whole = offset = 0
    decompressor = zlib.decompressobj(wbits=31)
    with open(path, "rb") as f:
        while chunk := f.read(1 << 16):
            while chunk:
                try:
                    decompressor.decompress(chunk)  # the text is not kept, only where it ends
                except zlib.error:
                    return whole
                if not decompressor.eof:
                    offset += len(chunk)
                    break
                rest = decompressor.unused_data
                offset += len(chunk) - len(rest)
                whole, chunk = offset, rest
                decompressor = zlib.decompressobj(wbits=31)
    return whole


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
