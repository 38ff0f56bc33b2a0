"""The request-log cost benchmark runs end to end (its figures are for people, not asserted)."""
import re
import sys

import pytest
from django.db import connection

from tests.live import run_script

pytestmark = [pytest.mark.live, pytest.mark.production]


def test_the_request_log_benchmark_measures_both_tables_and_two_prune_runs():
    """On the PostgreSQL pass, which has a server it may make a database on."""
    if connection.vendor != "postgresql":
        pytest.skip("runs with the PostgreSQL pass (it measures PostgreSQL's tables)")
    s = connection.settings_dict
    url = (f"postgres://{s['USER']}@{s['HOST'] or '127.0.0.1'}:{s['PORT'] or 5432}/"
           f"request_log_bench_test")
    run = run_script([sys.executable, "benchmarks/request_log_cost.py", "--rows", "4000",
                      "--database-url", url])
    assert run.returncode == 0, run.stdout + run.stderr
    out = run.stdout
    assert "endpoints_mlrequest (4,000 rows)" in out, out
    assert "endpoints_shadowprediction, per shadow model (4,000 rows)" in out, out
    totals = re.findall(r"^  total\s+[\d.]+\s+(\d+)\s+(\d+)$", out, re.M)
    assert len(totals) == 2 and all(int(per_row) > 0 for per_row, _ in totals), out
    assert re.search(r"insert rate, .*: [\d,]+ requests/s", out), out
    runs = re.findall(r"^  --older-than-days (\d+)( --archive)?\s+([\d,]+)\s+(\d+)", out, re.M)
    # 4,000 requests dated over 60 days in four statements: one is older than 45 days, one
    # more older than 30
    assert [(days, archive, deleted) for days, archive, deleted, _ in runs] == [
        ("45", " --archive", "1,000"), ("30", "", "1,000")], out
    assert re.search(r"the archive: [\d.]+ MB, \d+ bytes per request", out), out
