"""Flower runs only with basic auth, on loopback by default, with /metrics behind the auth too."""

from __future__ import annotations

import base64
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

from tests.servers import ROOT
from tradebot.flower import FlowerConfigError, flower_argv


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, auth: str | None = None) -> int:
    req = urllib.request.Request(url)
    if auth:
        req.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code


@pytest.mark.parametrize("auth", ["", "user", "user:", ":pass"])
def test_given_no_usable_credentials_when_building_the_command_then_refused(auth):
    with pytest.raises(FlowerConfigError):
        flower_argv({"FLOWER_BASIC_AUTH": auth})


def test_given_credentials_when_building_the_command_then_loopback_and_basic_auth():
    assert flower_argv({"FLOWER_BASIC_AUTH": "ops:s3cret"}) == [
        "flower", "--address=127.0.0.1", "--port=5555", "--basic-auth=ops:s3cret"]


def test_given_no_credentials_when_starting_flower_then_it_exits_with_the_reason():
    env = {k: v for k, v in os.environ.items() if k != "FLOWER_BASIC_AUTH"}
    out = subprocess.run([sys.executable, "-m", "tradebot.flower"], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 2 and "FLOWER_BASIC_AUTH" in out.stderr


def test_given_a_running_flower_when_called_without_credentials_then_401_also_on_metrics():
    port = _free_port()
    env = {**os.environ, "FLOWER_BASIC_AUTH": "ops:s3cret", "FLOWER_PORT": str(port)}
    proc = subprocess.Popen([sys.executable, "-m", "tradebot.flower"], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert proc.poll() is None, "flower exited"
                time.sleep(0.5)
        assert _get(f"{base}/") == 401
        assert _get(f"{base}/metrics") == 401
        assert _get(f"{base}/api/workers") == 401
        assert _get(f"{base}/metrics", auth="ops:wrong") == 401
        assert _get(f"{base}/metrics", auth="ops:s3cret") == 200
    finally:
        proc.terminate()
        proc.wait(timeout=20)
