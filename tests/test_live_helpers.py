"""The helpers every live test stands on: waiting that survives a busy machine, and cleanup.

Each case is a way the suite used to fail or leak: a first answer slower than one second, a
server dropping its first connections, a script that exited while a child it left held the
output pipe (the test waited out its whole timeout), a server left listening after the run.
"""
import os
import socket
import subprocess
import threading

import pytest

from tests.live import run_script, spawn, stop, wait_for_http, wait_until


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    # A zombie still has a pid until its parent reaps it; it runs nothing.
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().split(")")[-1].split()[0] == "Z"


@pytest.fixture
def flaky_server():
    """A server that drops its first connection, answers the second with a 500, then 200."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    answers = [None, b"HTTP/1.1 500 Starting\r\nContent-Length: 0\r\n\r\n",
               b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"]

    def serve():
        for answer in answers:
            connection, _ = listener.accept()
            with connection:
                connection.recv(4096)
                if answer:
                    connection.sendall(answer)
    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}/"
    listener.close()


def test_waiting_retries_through_dropped_connections_and_errors(flaky_server):
    assert wait_for_http(flaky_server, deadline=60).text == "ok"


def test_waiting_stops_at_once_when_the_server_has_exited():
    exited = subprocess.Popen(["true"])
    exited.wait()
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{unused.getsockname()[1]}/"
    with pytest.raises(RuntimeError, match="the server exited with 0 before answering"):
        wait_for_http(url, exited)  # the default deadline is minutes: this must not wait it out


def test_a_script_is_not_waited_on_for_what_it_left_behind():
    # The script exits at once; a child it started keeps its stdout open for ten minutes.
    run = run_script(["bash", "-c", "sleep 600 & echo $!"], timeout=120)
    assert run.returncode == 0
    wait_until(lambda: gone(int(run.stdout)), "the script's leftover child ends", deadline=30)


def test_stop_ends_the_whole_process_group():
    leader = spawn(["bash", "-c", "sleep 600 & echo $!; wait"], stdout=subprocess.PIPE, text=True)
    child = int(leader.stdout.readline())
    stop(leader, grace=5)
    leader.stdout.close()
    assert gone(leader.pid)
    wait_until(lambda: gone(child), "the leader's child ends", deadline=30)
