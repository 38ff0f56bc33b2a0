#!/usr/bin/env python
"""What the request log costs PostgreSQL per stored prediction, and what pruning it costs.

    .venv/bin/python benchmarks/request_log_cost.py [--rows 200000] [--days 60]

On a PostgreSQL database of its own (--database-url, dropped and created afresh) it migrates,
registers the models, makes the extra trees a shadow of the random forest, and stores --rows
requests the way the predict path stores them: predictions._insert, one statement per 1,000
rows, with rows of adult.test as input and the random forest's real answers, and the shadow's
real answers stored by the same statement (--no-shadow leaves them out). The requests are
dated evenly over the last --days days, oldest first, and every other one gets its true label as
feedback, written by an UPDATE as a feedback PUT writes it, a batch after it was stored; the
request table is vacuumed on the way whenever those UPDATEs pass autovacuum's default threshold,
as autovacuum would on a server that runs for longer than this benchmark.

After VACUUM ANALYZE it measures each table, its TOAST and each index (pg_relation_size,
pg_indexes_size, pg_total_relation_size) and prints bytes per request and MB (10^6 bytes) per
million, and the insert rates of one connection. Then it runs `manage.py prune_requests` twice,
as an operator would: the oldest quarter with --archive, the next quarter without, and prints
each run's time, rows per second, longest batch (the longest any row was locked) and peak memory.
Figures are printed for people, not asserted; this machine's cores are shared with whatever
else runs.
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from unittest import mock

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.predict_throughput import fresh_database, manage  # noqa: E402
from research import adult  # noqa: E402
from tests.live import SERVER_DIR, spawn, stop  # noqa: E402

MB = 1_000_000


def prune(env: dict, label: str, *args: str) -> dict:
    """manage.py prune_requests in a process of its own: its figures and its peak RSS."""
    with tempfile.TemporaryFile("w+") as out:
        process = spawn([sys.executable, "manage.py", "prune_requests", *args], cwd=SERVER_DIR,
                        env=env, stdout=out, stderr=subprocess.STDOUT, text=True)
        started = time.perf_counter()
        peak = 0
        # VmHWM, the process's own high-water mark, read until it ends (the rusage of a child
        # would count the RSS of this process, which it was forked from).
        while process.poll() is None:
            try:
                status = Path(f"/proc/{process.pid}/status").read_text()
                peak = max(peak, int(re.search(r"^VmHWM:\s+(\d+) kB", status, re.M)[1]))
            except (OSError, TypeError):
                pass  # ending
            time.sleep(0.02)
        seconds = time.perf_counter() - started
        stop(process)
        out.seek(0)
        text = out.read()
    if process.returncode != 0:
        raise SystemExit(f"manage.py prune_requests {' '.join(args)} failed:\n{text}")
    total = re.search(r"^deleted (\d+) requests .* in (\d+) batches", text, re.M)
    batches = list(map(float, re.findall(r"^batch \d+: .*\(([\d.]+) s\)$", text, re.M)))
    return {"label": label, "seconds": seconds, "deleted": int(total[1]),
            "batches": int(total[2]), "batch_seconds": sum(batches),
            "longest": max(batches, default=0.0), "rss": peak / 1024}


def sizes(cursor, table: str) -> dict:
    cursor.execute(
        "SELECT pg_relation_size(c.oid), "
        "COALESCE(pg_total_relation_size(NULLIF(c.reltoastrelid, 0)), 0), "
        "pg_indexes_size(c.oid), pg_total_relation_size(c.oid) FROM pg_class c "
        "WHERE c.oid = %s::regclass", [table])
    heap, toast, indexes, total = cursor.fetchone()
    cursor.execute(
        "SELECT regexp_replace(pg_get_indexdef(i.oid), '^.* USING btree ', ''), x.indisprimary, "
        "x.indisunique, pg_relation_size(i.oid) FROM pg_index x "
        "JOIN pg_class i ON i.oid = x.indexrelid WHERE x.indrelid = %s::regclass "
        "ORDER BY x.indisprimary DESC, i.relname", [table])
    each = [(("primary key " if primary else "unique " if unique else "") + columns, size)
            for columns, primary, unique, size in cursor.fetchall()]
    cursor.execute(f"SELECT count(*) FROM {table}")
    rows = cursor.fetchone()[0]
    found = {"rows": rows, "heap": heap, "toast": toast, "indexes": indexes, "each": each,
             "maps": total - heap - toast - indexes, "total": total}
    if _has_pgstattuple(cursor):
        cursor.execute("SELECT tuple_len, free_space, dead_tuple_len FROM pgstattuple(%s)",
                       [table])
        found["live"], found["free"], found["dead"] = cursor.fetchone()
        cursor.execute(
            "SELECT (pgstatindex(x.indexrelid::regclass)).avg_leaf_density FROM pg_index x "
            "JOIN pg_class i ON i.oid = x.indexrelid WHERE x.indrelid = %s::regclass "
            "ORDER BY x.indisprimary DESC, i.relname", [table])
        found["each"] = [(f"{label} ({density:.0f}% full)", size)
                         for (label, size), (density,) in zip(each, cursor.fetchall())]
    return found


def _has_pgstattuple(cursor) -> bool:
    """pgstattuple (PostgreSQL's contrib) measures the heap's live rows and free space."""
    try:
        cursor.execute("CREATE EXTENSION IF NOT EXISTS pgstattuple")
        return True
    except Exception:  # noqa: BLE001 - without contrib, the breakdown is left out
        return False


def print_sizes(title: str, s: dict) -> None:
    def line(label: str, size: int) -> None:
        print(f"  {label:<52}{size / MB:>9.1f}{size / s['rows']:>10.0f}"
              f"{size / s['rows'] * 1e6 / MB:>12.0f}")

    print(f"{title} ({s['rows']:,} rows)")
    line("table (heap)", s["heap"])
    if "live" in s:
        line("  of which live rows", s["live"])
        line("  of which free space (reused by new rows)", s["free"] + s["dead"])
    line("TOAST (with its index)", s["toast"])
    for label, size in s["each"]:
        line(f"index {label}", size)
    line("free space and visibility maps", s["maps"])
    line("total", s["total"])


def store(args, rf, et) -> dict:
    """Store the requests as the predict path does, and give half of them feedback."""
    from django.db import connection
    from django.utils import timezone

    from apps.endpoints import predictions
    from apps.endpoints.models import MLRequest
    from apps.endpoints.registry import registry

    test = adult.load("adult.test")
    inputs = [{name: row[name] for name in adult.FEATURES} for row in test]
    truth = [row[adult.TARGET] for row in test]
    answers = registry.get(rf).compute_predictions(inputs)
    shadow_answers = registry.get(et).compute_predictions(inputs) if args.shadow else []

    batch = 1000
    batches = -(-args.rows // batch)
    start = timezone.now() - timedelta(days=args.days)
    step = timedelta(days=args.days) / batches
    seconds = {"requests": 0.0, "feedback": 0.0}
    given = dead = vacuums = 0  # feedback given; of it, since the last VACUUM

    def give_feedback(stored: list[MLRequest], index: list[int], when) -> int:
        by_label: dict[str, list[int]] = {}
        for request, i in list(zip(stored, index))[::2]:
            by_label.setdefault(truth[i], []).append(request.pk)
        started = time.perf_counter()
        for label, ids in by_label.items():
            MLRequest.objects.filter(pk__in=ids).update(feedback=label, feedback_at=when)
        seconds["feedback"] += time.perf_counter() - started
        return sum(map(len, by_label.values()))

    print(f"storing {args.rows:,} requests in {batches} statements of up to {batch:,} rows, "
          f"dated over {args.days} days", flush=True)
    previous = None  # feedback comes a batch later
    for number in range(batches):
        index = [(number * batch + i) % len(inputs)
                 for i in range(min(batch, args.rows - number * batch))]
        requests = [MLRequest(mlmodel=rf, ab_test_id=None, input_data=inputs[i],
                              full_response=answers[i], response=answers[i]["label"])
                    for i in index]
        when = start + step * (number + 0.5)
        with mock.patch.object(timezone, "now", return_value=when):
            shadowed = [(et, [shadow_answers[i] for i in index])] if args.shadow else []
            started = time.perf_counter()
            stored = predictions._insert(requests, shadowed)  # one statement, as predict does
            seconds["requests"] += time.perf_counter() - started
        if previous:
            dead += give_feedback(*previous, when)
        previous = (stored, index)
        if args.autovacuum and dead > 0.2 * (number + 1) * batch + 50:
            with connection.cursor() as cursor:
                cursor.execute(f"VACUUM {MLRequest._meta.db_table}")
            given, dead, vacuums = given + dead, 0, vacuums + 1
    given += dead + give_feedback(*previous, timezone.now())
    return {"given": given, "vacuums": vacuums, "seconds": seconds}


def measure(tables: list[str]) -> list[dict]:
    """Each table's sizes after VACUUM ANALYZE."""
    from django.db import connection

    with connection.cursor() as cursor:
        for table in tables:
            cursor.execute(f"VACUUM ANALYZE {table}")
        return [sizes(cursor, table) for table in tables]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000, help="requests to store (200000)")
    parser.add_argument("--days", type=int, default=60,
                        help="the requests are dated over this many days (60)")
    parser.add_argument("--batch-size", type=int, default=5000,
                        help="prune_requests --batch-size (5000)")
    parser.add_argument("--shadow", action=argparse.BooleanOptionalAction, default=True,
                        help="store a shadow model's answer to every request (default: yes)")
    parser.add_argument("--autovacuum", action=argparse.BooleanOptionalAction, default=True,
                        help="VACUUM the request table whenever feedback has left dead rows "
                             "past autovacuum's default threshold (20%% of the rows + 50), as "
                             "autovacuum would on a server running for longer (default: yes)")
    parser.add_argument("--fillfactor", type=int, default=None,
                        help="set the request table's fillfactor first (default: PostgreSQL's "
                             "100), to see what room for feedback's UPDATE changes")
    parser.add_argument("--database-url",
                        default="postgres://postgres@127.0.0.1:5432/request_log_bench",
                        help="a PostgreSQL database this run may drop and create")
    args = parser.parse_args(argv)
    if args.rows < 1 or args.days < 4:
        raise SystemExit("--rows must be at least 1 and --days at least 4")

    fresh_database(args.database_url)
    env = {**os.environ, "DEBUG": "0", "SECRET_KEY": "benchmark-" + "x" * 50,
           "DATABASE_URL": args.database_url, "LOG_LEVEL": "WARNING",
           "DJANGO_SETTINGS_MODULE": "server.settings"}
    env.pop("REDIS_URL", None)
    manage(env, "migrate", "--noinput", "--verbosity", "0")
    manage(env, "register_models")
    os.environ.update(env)  # this process stores the requests itself, through the service code
    import django

    django.setup()
    from django.db import connection

    from apps.endpoints import services
    from apps.endpoints.models import MLModel, MLRequest, ShadowPrediction

    rf = MLModel.objects.get(name="random forest")
    et = MLModel.objects.get(name="extra trees")
    requests_table, shadows_table = MLRequest._meta.db_table, ShadowPrediction._meta.db_table
    if args.fillfactor:
        with connection.cursor() as cursor:
            cursor.execute(f"ALTER TABLE {requests_table} SET (fillfactor = {args.fillfactor})")
    if args.shadow:
        services.mlmodel_status_set(mlmodel=et, status="shadow", created_by="benchmark")
    stored = store(args, rf, et)
    requests_size, shadows_size = measure([requests_table, shadows_table])
    with connection.cursor() as cursor:
        cursor.execute("SELECT version()")
        version = cursor.fetchone()[0].split(" on ")[0]
        cursor.execute(f"SELECT avg(pg_column_size(t.*)), avg(pg_column_size(t.input_data)), "
                       f"avg(pg_column_size(t.full_response)) FROM {requests_table} t")
        row_bytes, input_bytes, response_bytes = cursor.fetchone()

    print()
    print(f"the request log on {version}, after VACUUM ANALYZE: {args.rows:,} requests, "
          f"{stored['given']:,} with feedback"
          + (f", fillfactor {args.fillfactor}" if args.fillfactor else "")
          + (f"; {stored['vacuums']} VACUUMs of the request table on the way, as autovacuum's "
             f"would be" if args.autovacuum else "; no VACUUM on the way"))
    print(f"  {'':<52}{'MB':>9}{'bytes/row':>10}{'MB per 1M':>12}")
    print_sizes(requests_table, requests_size)
    print(f"  an average row holds {row_bytes:.0f} bytes: input_data {input_bytes:.0f}, "
          f"full_response {response_bytes:.0f}")
    if args.shadow:
        print_sizes(f"{shadows_table}, per shadow model", shadows_size)
    print()
    seconds = stored["seconds"]
    rate = f"{args.rows / seconds['requests']:,.0f} requests/s" + (
        " (each with its shadow answer, in the same statement)" if args.shadow else "")
    print(f"insert rate, one connection, 1,000-row statements: {rate}; feedback UPDATEs "
          f"{stored['given'] / seconds['feedback']:,.0f} rows/s", flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        archive = Path(tmp) / "requests.jsonl.gz"
        oldest, older = str(args.days * 3 // 4), str(args.days // 2)
        runs = [prune(env, f"--older-than-days {oldest} --archive", "--older-than-days", oldest,
                      "--batch-size", str(args.batch_size), "--archive", str(archive)),
                prune(env, f"--older-than-days {older}", "--older-than-days", older,
                      "--batch-size", str(args.batch_size))]
        archive_bytes = archive.stat().st_size
    after = sum(s["total"] for s in measure([requests_table, shadows_table]))

    print()
    print(f"retention: manage.py prune_requests --batch-size {args.batch_size}, each run a "
          f"process of its own (seconds include Django's start)")
    print(f"  {'run':<34}{'deleted':>9}{'batches':>9}{'seconds':>9}{'in batches':>11}"
          f"{'rows/s':>9}{'longest batch s':>16}{'peak RSS MB':>12}")
    for run in runs:
        rate = run["deleted"] / run["batch_seconds"] if run["batch_seconds"] else 0
        print(f"  {run['label']:<34}{run['deleted']:>9,}{run['batches']:>9}"
              f"{run['seconds']:>9.1f}{run['batch_seconds']:>11.2f}{rate:>9,.0f}"
              f"{run['longest']:>16.3f}{run['rss']:>12.0f}")
    if runs[0]["deleted"]:
        print(f"  the archive: {archive_bytes / MB:.1f} MB, "
              f"{archive_bytes / runs[0]['deleted']:.0f} bytes per request (gzip JSON lines, "
              f"with its shadow predictions)")
    before = requests_size["total"] + shadows_size["total"]
    print(f"  both tables after pruning and VACUUM: {after / MB:.1f} MB (before: "
          f"{before / MB:.1f} MB): VACUUM keeps the files, and new rows reuse the space")
    return 0


if __name__ == "__main__":
    sys.exit(main())
