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
