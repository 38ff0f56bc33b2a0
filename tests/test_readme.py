"""The README's examples run as written, against a live gunicorn."""
import re

import pytest
import requests

from conftest import issue_token, manage
from tests.live import ROOT, run_script

pytestmark = pytest.mark.live


def shell_block_after(marker: str) -> str:
    """The first ```sh block after ``marker`` in the README."""
    text = (ROOT / "README.md").read_text()
    found = re.search(r"```sh\n(.*?)```", text[text.index(marker):], re.S)
    return found[1]


def test_the_ab_test_by_hand_runs_as_written(live_server_url, tmp_path):
    manage("register_models")
    script = shell_block_after("By hand, with `make run` serving")
    env = {"PATH": "/usr/bin:/bin", "ML_API_URL": live_server_url,
           "ML_API_TOKEN": issue_token()}
    run = run_script(["bash", "-e", "-o", "pipefail", "-c", script], cwd=tmp_path, env=env)
    assert run.returncode == 0, run.stdout + run.stderr
    assert (tmp_path / "row.json").is_file()
    summary = run.stdout.strip().splitlines()
    assert "status changes:" in summary[-1] and "-> production" in summary[-1]
    test = requests.get(f"{live_server_url}/api/v1/abtests", timeout=30).json()["results"][0]
    assert test["state"] == "stopped"
    assert sum(m["feedback"] for m in test["results"]["models"]) == 20
