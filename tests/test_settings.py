"""Production settings, checked the way an operator meets them: by starting manage.py."""
import sys

from tests.live import SERVER_DIR, run_script

LONG_KEY = "k" * 20 + "-production-grade-secret-key-with-enough-entropy-0123456789"


def manage(*args, **env):
    base = {"PATH": "/usr/bin:/bin", "DJANGO_SETTINGS_MODULE": "server.settings"}
    return run_script([sys.executable, "manage.py", *args], cwd=SERVER_DIR, env={**base, **env})


def test_without_secret_key_and_debug_off_start_up_stops_with_a_clear_message():
    result = manage("check", DEBUG="0")
    assert result.returncode != 0
    assert "SECRET_KEY is not set. Set the SECRET_KEY environment variable" in result.stderr


def test_check_deploy_has_no_unsilenced_warning():
    result = manage("check", "--deploy", "--fail-level", "WARNING", DEBUG="0",
                    SECRET_KEY=LONG_KEY)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues (2 silenced)" in result.stdout


def test_static_files_are_served_by_the_app_with_debug_off(tmp_path):
    """Kubernetes has no nginx for /static/: WhiteNoise serves what collectstatic gathered."""
    static = tmp_path / "static"
    env = dict(DEBUG="0", SECRET_KEY=LONG_KEY, STATIC_ROOT=str(static), ALLOWED_HOSTS="testserver",
               DATABASE_URL=f"sqlite:///{tmp_path / 'unused.sqlite3'}")
    collected = manage("collectstatic", "--noinput", "--verbosity", "0", **env)
    assert collected.returncode == 0, collected.stdout + collected.stderr
    css = "rest_framework/css/bootstrap.min.css"
    fetch = ("from django.test import Client; r = Client().get('/static/" + css + "'); "
             "print(r.status_code, len(b''.join(r.streaming_content)), r['Content-Type'])")
    served = manage("shell", "--verbosity", "0", "-c", fetch, **env)
    assert served.returncode == 0, served.stdout + served.stderr
    status, size, content_type = served.stdout.strip().splitlines()[-1].split(" ", 2)
    assert (status, content_type) == ("200", 'text/css; charset="utf-8"')
    assert int(size) == (static / css).stat().st_size > 0
