"""The rate-limit benchmark runs end to end (its figures are for people, not asserted)."""
import re
import sys

import pytest

from tests.live import free_port, run_script

pytestmark = pytest.mark.live


def test_the_benchmark_prints_a_row_per_setup_and_round():
    run = run_script([sys.executable, "benchmarks/predict_rate_limit.py", "--requests", "20",
                      "--concurrency", "2", "--rounds", "1", "--port", str(free_port())])
    assert run.returncode == 0, run.stdout + run.stderr
    rows = re.findall(r"^\s+1  (off|memory|redis)\s+[\d.]+ \([\d.]+x\)", run.stdout, re.M)
    assert rows == ["off", "memory", "redis"], run.stdout
