"""Pruning the request log (retention.py, manage.py prune_requests), on the real database."""
import gzip
import io
import json
import threading
from datetime import timedelta
from unittest import mock

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from apps.endpoints import predictions, retention, services
from apps.endpoints.exceptions import InvalidInput
from apps.endpoints.models import ABTest, MLModel, MLRequest, ShadowPrediction


def stored(mlmodel, n, *, days_ago, ab_test=None, feedback=None):
    """``n`` requests served by ``mlmodel`` ``days_ago`` days ago; their ids, oldest first."""
    made = MLRequest.objects.bulk_create(
        MLRequest(mlmodel=mlmodel, ab_test=ab_test, input_data={"age": 20 + i, "sex": "Male"},
                  full_response={"label": "<=50K", "probability": i / 100},
                  response="<=50K", feedback=feedback)
        for i in range(n))
    ids = [r.pk for r in made]
    MLRequest.objects.filter(pk__in=ids).update(
        created_at=timezone.now() - timedelta(days=days_ago))
    return ids


def shadowed(ids, shadow):
    ShadowPrediction.objects.bulk_create(
        ShadowPrediction(mlrequest_id=pk, mlmodel=shadow, response=">50K",
                         full_response={"label": ">50K", "probability": 0.7}) for pk in ids)


def prune(*args) -> str:
    out = io.StringIO()
    call_command("prune_requests", *args, stdout=out)
    return out.getvalue()


def left(ids):
    return set(MLRequest.objects.filter(pk__in=ids).values_list("pk", flat=True))


@pytest.fixture
def rf(registered):
    return registered["random forest"]


@pytest.fixture
def et(registered):
    return registered["extra trees"]


def test_requests_older_than_n_days_are_deleted_and_recent_ones_kept(rf):
    old = stored(rf, 30, days_ago=100)
    recent = stored(rf, 20, days_ago=80)
    out = prune("--older-than-days", "90")
    assert left(old) == set()
    assert left(recent) == set(recent)
    assert "deleted 30 requests created before" in out


def test_requests_of_a_running_ab_test_are_kept_those_of_a_stopped_one_go(rf, et):
    stopped = ABTest.objects.create(title="old", endpoint=rf.endpoint, created_by="ann",
                                    ended_at=timezone.now() - timedelta(days=95))
    of_stopped = stored(rf, 5, days_ago=100, ab_test=stopped)
    running = services.ab_test_create(title="now", created_by="ann", mlmodels=[rf, et])
    of_running = stored(et, 7, days_ago=100, ab_test=running)
    plain = stored(rf, 3, days_ago=100)

    out = prune("--older-than-days", "90", "--batch-size", "2")
    assert left(of_stopped + plain) == set()
    assert left(of_running) == set(of_running)
    assert "deleted 8 requests" in out
    assert "kept 7 older requests of running A/B tests" in out


def test_a_deleted_requests_shadow_predictions_go_with_it(rf, et):
    old, recent = stored(rf, 12, days_ago=100), stored(rf, 4, days_ago=1)
    shadowed(old + recent, et)
    out = prune("--older-than-days", "90", "--batch-size", "5")
    assert set(ShadowPrediction.objects.values_list("mlrequest_id", flat=True)) == set(recent)
    assert "deleted 12 requests created before" in out and "their 12 shadow predictions" in out


def test_batches_hold_at_most_the_batch_size_and_cost_two_deletes_each(rf, et):
    shadowed(stored(rf, 25, days_ago=100), et)
    with CaptureQueriesContext(connection) as queries:
        out = prune("--older-than-days", "90", "--batch-size", "10")
    batches = [line for line in out.splitlines() if line.startswith("batch ")]
    assert [line.split(":")[1].split(" requests")[0] for line in batches] == [
        " deleted 10", " deleted 10", " deleted 5"]
    deletes = [q["sql"] for q in queries.captured_queries if q["sql"].startswith("DELETE")]
    assert len(deletes) == 2 * 3, deletes
    assert "in 3 batches" in out


def test_batches_go_oldest_first(rf):
    oldest, older = stored(rf, 4, days_ago=300), stored(rf, 4, days_ago=200)
    seen = []
    retention.mlrequests_prune(older_than_days=90, batch_size=4,
                               on_batch=lambda b: seen.append(left(oldest + older)))
    assert seen == [set(older), set()]


def test_the_archive_holds_exactly_the_deleted_requests_with_their_shadows(rf, et, tmp_path):
    old, recent = stored(rf, 9, days_ago=100, feedback=">50K"), stored(rf, 3, days_ago=1)
    shadowed(old[:4] + recent, et)
    expected = []
    for row in MLRequest.objects.filter(pk__in=old).order_by("created_at", "id").values(
            *retention.REQUEST_FIELDS):
        shadows = ShadowPrediction.objects.filter(mlrequest_id=row["id"]).order_by("id").values(
            *retention.SHADOW_FIELDS)
        expected.append({**row, "shadow_predictions": list(shadows)})
    archive = tmp_path / "requests.jsonl.gz"

    out = prune("--older-than-days", "90", "--batch-size", "4", "--archive", str(archive))
    lines = gzip.decompress(archive.read_bytes()).decode().splitlines()
    assert [json.loads(line) for line in lines] == json.loads(
        json.dumps(expected, default=retention._json_default))
    assert left(old) == set() and left(recent) == set(recent)
    assert f"archived 9 to {archive}" in out
    assert out.count(", archived ") == 3  # a gzip member per batch, each on disk before it goes
    assert archive.read_bytes().count(b"\x1f\x8b\x08") >= 3


def test_a_second_run_appends_to_the_archive(rf, tmp_path):
    archive = tmp_path / "a.jsonl.gz"
    first, second = stored(rf, 3, days_ago=200), stored(rf, 2, days_ago=100)
    prune("--older-than-days", "150", "--archive", str(archive))
    prune("--older-than-days", "90", "--archive", str(archive))
    with gzip.open(archive, "rt") as f:
        assert [json.loads(line)["id"] for line in f] == first + second


def test_a_crash_after_the_archive_write_loses_nothing_and_a_rerun_archives_again(
        rf, tmp_path, monkeypatch):
    """The batch is on disk before its delete; if the delete never commits, the rows stay and
    the next run archives them again (so an id can appear twice: keep its last line)."""
    old = stored(rf, 3, days_ago=100)
    archive = tmp_path / "a.jsonl.gz"
    real_delete = retention._delete

    def crash(*args):
        raise RuntimeError("the machine went away")

    monkeypatch.setattr(retention, "_delete", crash)
    with pytest.raises(RuntimeError):
        prune("--older-than-days", "90", "--archive", str(archive))
    assert left(old) == set(old)
    with gzip.open(archive, "rt") as f:
        assert [json.loads(line)["id"] for line in f] == old

    monkeypatch.setattr(retention, "_delete", real_delete)
    prune("--older-than-days", "90", "--archive", str(archive))
    assert left(old) == set()
    with gzip.open(archive, "rt") as f:
        assert [json.loads(line)["id"] for line in f] == old + old


def test_an_unfinished_batch_at_the_archives_end_is_cut_before_appending(rf, tmp_path):
    archive = tmp_path / "a.jsonl.gz"
    whole = gzip.compress(b'{"id": 1}\n')
    torn = gzip.compress(b'{"id": 2}\n' * 50)[:-9]  # a crash mid-write: no end, no checksum
    archive.write_bytes(whole + torn)
    old = stored(rf, 2, days_ago=100)
    out = prune("--older-than-days", "90", "--archive", str(archive))
    assert f"cut {len(torn)} bytes of an unfinished batch" in out
    with gzip.open(archive, "rt") as f:
        assert [json.loads(line)["id"] for line in f] == [1, *old]


def test_a_file_that_is_not_an_archive_is_refused_and_nothing_is_deleted(rf, tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes\n")
    old = stored(rf, 2, days_ago=100)
    with pytest.raises(CommandError, match="is not a gzip archive"):
        prune("--older-than-days", "90", "--archive", str(notes))
    assert notes.read_text() == "my notes\n"
    assert left(old) == set(old)


def test_an_archive_that_cannot_be_written_is_refused_before_anything_is_deleted(rf, tmp_path):
    old = stored(rf, 2, days_ago=100)
    with pytest.raises(CommandError, match="cannot write the archive"):
        prune("--older-than-days", "90", "--archive", str(tmp_path / "no" / "a.jsonl.gz"))
    assert left(old) == set(old)


def test_a_dry_run_deletes_and_writes_nothing(rf, et, tmp_path):
    old = stored(rf, 7, days_ago=100)
    shadowed(old[:2], et)
    archive = tmp_path / "a.jsonl.gz"
    out = prune("--older-than-days", "90", "--batch-size", "5", "--dry-run",
                "--archive", str(archive))
    assert left(old) == set(old)
    assert ShadowPrediction.objects.count() == 2
    assert not archive.exists()
    assert "batch 1: would delete 5 requests and 2 shadow predictions" in out
    assert "would delete 7 requests" in out and "nothing was deleted or archived" in out


@pytest.mark.parametrize("days", ["0", "-3"])
def test_an_age_below_one_day_is_refused(rf, days):
    old = stored(rf, 2, days_ago=100)
    with pytest.raises(CommandError, match="--older-than-days must be at least 1"):
        prune("--older-than-days", days)
    assert left(old) == set(old)


def test_the_age_is_required_and_a_whole_number(db):
    with pytest.raises(CommandError, match="required: --older-than-days"):
        prune()
    with pytest.raises(CommandError, match="invalid int value"):
        prune("--older-than-days", "1.5")


@pytest.mark.parametrize("size", ["0", str(retention.MAX_BATCH_SIZE + 1)])
def test_a_batch_size_out_of_range_is_refused(db, size):
    with pytest.raises(CommandError, match="the batch size must be from 1 to 10000"):
        prune("--older-than-days", "1", "--batch-size", size)


@pytest.mark.parametrize("days", [0, True, 1.5, "90"])
def test_the_service_refuses_an_age_that_is_not_a_whole_number_of_days(db, days):
    with pytest.raises(InvalidInput, match="at least 1"):
        retention.mlrequests_prune(older_than_days=days)


@pytest.mark.django_db(transaction=True)
def test_predictions_and_feedback_go_on_while_a_prune_runs(sample_row):
    """Each batch commits on its own, and its locks stop no new request: on PostgreSQL, another
    connection sees each batch's deletes as soon as it ends, predicts during a batch, and
    records feedback on a request a later batch deletes, with a lock timeout of two seconds."""
    if connection.vendor != "postgresql":
        pytest.skip("SQLite has one writer at a time: a batch holds the whole database")
    call_command("register_models", stdout=io.StringIO())
    rf = MLModel.objects.get(name="random forest")
    old = stored(rf, 30, days_ago=100)
    errors, done = [], []

    def elsewhere(work):
        def run():
            try:
                with connection.cursor() as cursor:
                    cursor.execute("SET lock_timeout = '2s'")
                done.append(work())
            except Exception as exc:  # reported below
                errors.append(exc)
            finally:
                connection.close()
        thread = threading.Thread(target=run)
        thread.start()
        thread.join()

    real_delete = retention._delete

    def delete_while_someone_predicts(model, column, ids):
        if model is MLRequest:  # inside the batch's transaction, its rows locked
            elsewhere(lambda: predictions.prediction_create(
                endpoint_name="classifier", input_data=sample_row))
        return real_delete(model, column, ids)

    def between_batches(batch):
        assert not connection.in_atomic_block
        elsewhere(lambda: MLRequest.objects.filter(pk__in=old).count())  # committed already
        assert done.pop() == 30 - 10 * batch.number
        if batch.number == 1:  # old[-1] is deleted by the last batch
            elsewhere(lambda: services.feedback_set(mlrequest=MLRequest.objects.get(pk=old[-1]),
                                                    feedback=">50K"))

    with mock.patch.object(retention, "_delete", delete_while_someone_predicts):
        result = retention.mlrequests_prune(older_than_days=90, batch_size=10,
                                            on_batch=between_batches)
    assert errors == []
    assert len(done) == 3 + 1  # a prediction during each batch, feedback after the first
    assert result.requests == 30 and left(old) == set()
    assert MLRequest.objects.count() == 3  # the predictions made meanwhile



@pytest.mark.parametrize("model", [MLRequest, ShadowPrediction])
def test_the_request_log_has_no_index_another_index_already_covers(db, model):
    """Every index is bytes on every row of the largest tables: none may be a leading part of
    another (README: What scale costs)."""
    with connection.cursor() as cursor:
        found = connection.introspection.get_constraints(cursor, model._meta.db_table)
    indexes = {name: tuple(c["columns"]) for name, c in found.items()
               if (c["index"] or c["unique"]) and not c["primary_key"]}
    covered = [(name, columns, other) for name, columns in indexes.items()
               for other_name, other in indexes.items()
               if other_name != name and len(other) > len(columns)
               and other[:len(columns)] == columns]
    assert covered == []


def test_dropping_them_leaves_the_foreign_keys_alone(transactional_db):
    """Migration 0005 drops the indexes only: Django's own AlterField would drop and re-add the
    foreign keys, and re-adding one reads the whole table under a lock that stops predictions."""
    call_command("migrate", "endpoints", "0004", verbosity=0)
    try:
        with CaptureQueriesContext(connection) as migrated:
            call_command("migrate", "endpoints", "0005", verbosity=0)
    finally:
        call_command("migrate", verbosity=0)
    changes = [q["sql"] for q in migrated.captured_queries
               if q["sql"].lstrip().upper().startswith(("ALTER", "DROP", "CREATE", "SET"))]
    assert len(changes) == 3 and all(sql.startswith("DROP INDEX") for sql in changes), changes
