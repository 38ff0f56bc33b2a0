"""Processes the tests and benchmarks start (gunicorn, nginx, scripts), and waiting for them.

Written for a busy machine: a server that is slow to start is waited for, with retries on every
kind of failure, up to a generous deadline (``LIVE_DEADLINE``, default 180 s), and a process that
has exited is never waited on. Every process starts in a process group of its own, so ``stop``
ends it with everything it started (gunicorn's workers), and every process started here is
remembered, so ``stop_all`` (run by conftest at the end of the session, and at exit) leaves
nothing running even when a test fails half-way.
"""
from __future__ import annotations

import atexit
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
SERVER_DIR = ROOT / "backend" / "server"
GUNICORN_CONF = ROOT / "docker" / "backend" / "gunicorn.conf.py"
NGINX_TEMPLATE = ROOT / "docker" / "nginx" / "default.conf.template"
LIVE_DEADLINE = float(os.environ.get("LIVE_DEADLINE", "180"))

_started: list[subprocess.Popen] = []


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spawn(args: list[str], **kwargs) -> subprocess.Popen:
    """Popen in a new session (its own process group), remembered for ``stop_all``."""
    process = subprocess.Popen(args, start_new_session=True, **kwargs)
    _started.append(process)
    return process


def _signal_group(process: subprocess.Popen, sig: int) -> bool:
    try:
        os.killpg(process.pid, sig)  # the group's id is the leader's pid (start_new_session)
        return True
    except (ProcessLookupError, PermissionError):
        return False


def stop(process: subprocess.Popen, grace: float = 15) -> None:
    """SIGTERM to the process and its group, SIGKILL to whatever is left after ``grace``."""
    if process.poll() is None:
        _signal_group(process, signal.SIGTERM)
        try:
            process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            pass
    _signal_group(process, signal.SIGKILL)  # stragglers: workers whose master is gone
    if process.poll() is None:
        process.wait()
    if process in _started:
        _started.remove(process)


def stop_all() -> None:
    for process in list(_started):
        stop(process, grace=5)


atexit.register(stop_all)


def wait_for_http(url: str, process: subprocess.Popen | None = None,
                  deadline: float = LIVE_DEADLINE) -> requests.Response:
    """The first answer below 500 from ``url``; retries on any failure until ``deadline`` s."""
    give_up = time.monotonic() + deadline
    last = "no attempt"
    while True:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"the server exited with {process.returncode} before answering "
                               f"{url} (last attempt: {last})")
        try:
            response = requests.get(url, timeout=max(1.0, min(15.0, give_up - time.monotonic())))
            if response.status_code < 500:
                return response
            last = f"HTTP {response.status_code}"
        except requests.RequestException as exc:
            last = f"{type(exc).__name__}: {exc}"
        if time.monotonic() >= give_up:
            raise RuntimeError(f"no answer from {url} within {deadline:.0f}s (last: {last})")
        time.sleep(0.25)


def wait_until(condition, what: str, deadline: float = LIVE_DEADLINE) -> float:
    """Seconds until ``condition()`` holds; AssertionError naming ``what`` after ``deadline``."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > deadline:
            raise AssertionError(f"{what}: not within {deadline:.0f}s")
        time.sleep(0.1)
    return time.monotonic() - started


def run_script(args: list[str], *, env: dict | None = None, cwd: Path = ROOT,
               timeout: float = 600) -> subprocess.CompletedProcess:
    """Run a command to its end, its output in files rather than pipes.

    A pipe stays open while any child of the command holds it (a server it started and failed
    to stop), and reading it would wait for that child too; a file does not. Whatever the
    command leaves behind in its process group is stopped afterwards.
    """
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        process = spawn(args, cwd=cwd, env=env, stdout=out, stderr=err, text=True)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pass
        finally:
            timed_out = process.poll() is None
            stop(process, grace=5)
        out.seek(0)
        err.seek(0)
        result = subprocess.CompletedProcess(args, process.returncode, out.read(), err.read())
    if timed_out:
        raise RuntimeError(f"{' '.join(map(str, args))} ran over {timeout:.0f}s; output so far:\n"
                           f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


def start_gunicorn(port: int, env: dict, *, host: str = "127.0.0.1", workers: int = 2,
                   log: Path | None = None, accesslog: str = "") -> subprocess.Popen:
    """gunicorn with the project's own config file, as the container runs it, once it answers.

    ``log`` receives its output (worker start-up, errors, and the access log when
    ``accesslog`` is "-"); ``accesslog`` may also name a file of its own.
    """
    stream = open(log, "ab") if log else None
    env = {"GUNICORN_LOGLEVEL": "warning", **env, "GUNICORN_BIND": f"{host}:{port}",
           "GUNICORN_WORKERS": str(workers), "GUNICORN_ACCESSLOG": accesslog}
    try:
        process = spawn([sys.executable, "-m", "gunicorn", "--config", str(GUNICORN_CONF),
                         "server.wsgi:application"], cwd=SERVER_DIR, env=env, stdout=stream,
                        stderr=stream)
    finally:
        if stream:
            stream.close()  # the child holds its own copy
    try:
        wait_for_http(f"http://{host}:{port}/health/live", process)
    except Exception:
        stop(process)
        raise
    return process


def render(template: str, **values) -> str:
    """What the nginx image's envsubst does: replace only the variables it is given."""
    return re.sub(r"\$\{(\w+)\}", lambda m: values.get(m.group(1), m.group(0)), template)


def start_nginx(folder: Path, port: int, *, upstream: str, static_root: Path,
                max_body_bytes: int, max_artifact_bytes: int = 100 * 1024 * 1024,
                access_log: bool = True) -> subprocess.Popen:
    """nginx from the distribution with the project's template, as the nginx image renders it,
    its files in ``folder``; once it answers on ``port``."""
    conf = render(NGINX_TEMPLATE.read_text(), APP_UPSTREAM=upstream, STATIC_ROOT=str(static_root),
                  NGINX_PORT=f"127.0.0.1:{port}", MAX_BODY_BYTES=str(max_body_bytes),
                  MAX_ARTIFACT_BYTES=str(max_artifact_bytes))
    (folder / "default.conf").write_text(conf)
    (folder / "nginx.conf").write_text(f"""
{"user root;" if os.geteuid() == 0 else ""}
worker_processes 1;
pid {folder}/nginx.pid;
error_log {folder}/nginx-error.log;
events {{ worker_connections 1024; }}
http {{
    include /etc/nginx/mime.types;
    access_log {f"{folder}/nginx-access.log" if access_log else "off"};
    client_body_temp_path {folder}/client_body;
    proxy_temp_path {folder}/proxy;
    include {folder}/default.conf;
}}
""")
    nginx = spawn(["nginx", "-c", str(folder / "nginx.conf"), "-p", str(folder),
                   "-g", "daemon off;"])
    try:
        wait_for_http(f"http://127.0.0.1:{port}/health/live", nginx)
    except Exception:
        stop(nginx)
        raise
    return nginx
