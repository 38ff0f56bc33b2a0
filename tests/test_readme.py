"""The README's examples run as written, against a live gunicorn."""
import re
from pathlib import Path

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


def test_a_model_from_the_notebook_is_uploaded_and_ab_tested_as_written(transactional_db,
                                                                         tmp_path):
    """The README's whole bring-your-own-model path: the notebook's Python, then its shell
    block (upload with curl, A/B test with ab_test.py) against a live gunicorn."""
    import shutil
    import sys

    from conftest import start_gunicorn
    from tests.live import free_port, stop

    from research import adult

    manage("register_models")
    shutil.copy(adult.data_dir() / "adult.data", tmp_path / "adult.data")
    notebook = re.search(r"```python\n(.*?)```", (ROOT / "README.md").read_text()[
        (ROOT / "README.md").read_text().index("In a notebook, next to"):], re.S)[1]
    (tmp_path / "notebook.py").write_text(notebook)
    trained = run_script([sys.executable, "notebook.py"], cwd=tmp_path)
    assert trained.returncode == 0, trained.stdout + trained.stderr
    assert (tmp_path / "income_logreg.onnx").is_file()

    (tmp_path / "ab_test.py").symlink_to(ROOT / "ab_test.py")  # "python ab_test.py", as written
    port = free_port()
    server = start_gunicorn(port, ARTIFACT_STORE_DIR=str(tmp_path / "store"),
                            ARTIFACT_CACHE_DIR=str(tmp_path / "cache"))
    try:
        url = f"http://127.0.0.1:{port}"
        env = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "ML_API_URL": url,
               "ML_API_TOKEN": issue_token()}
        script = shell_block_after("Then upload it")
        run = run_script(["bash", "-e", "-o", "pipefail", "-c", script], cwd=tmp_path, env=env)
        assert run.returncode == 0, run.stdout + run.stderr
        assert '"artifact_source": "store"' in run.stdout.replace('":"', '": "')
        test = requests.get(f"{url}/api/v1/abtests", timeout=60).json()["results"][0]
        assert test["state"] == "stopped" and test["policy"] == "significant"
        assert {m["name"] for m in test["models"]} == {"random forest", "logistic regression"}
        assert test["results"]["decision"]["reason"] in run.stdout
    finally:
        stop(server)
