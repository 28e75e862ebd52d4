"""`make test` prepares the machine itself (scripts/prepare-tests): idempotent,
and clear about what it cannot do."""

import os
import shutil
import subprocess
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "prepare-tests"
CHANGED = ("installed", "started", "enabled", "set to")


def run_prepare(env=None, user=None):
    command = [str(SCRIPT)]
    if user is not None:
        command = ["runuser", "-u", user, "--", *command]
    return subprocess.run(
        command, capture_output=True, text=True, timeout=300, env={**os.environ, **(env or {})}
    )


def test_a_second_run_changes_nothing():
    # `make test` ran it just before this suite: everything is in place now.
    result = run_prepare()
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert {line.split()[1] for line in lines} >= {
        "chromium", "redis", "rabbitmq", "nats", "postgresql",
    }  # fmt: skip
    assert all(line.startswith("prepare-tests: ") for line in lines)
    assert not [line for line in lines if any(word in line for word in CHANGED)], lines


def test_without_root_a_missing_package_stops_with_one_clear_message(tmp_path):
    env = {"EVENTSCOPE_CHROMIUM": str(tmp_path / "no-chromium-here")}
    if os.geteuid() == 0:
        assert shutil.which("runuser"), "runuser (util-linux) is needed to act as another user"
        result = run_prepare(env, user="nobody")
    else:
        result = run_prepare(env)
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1
    assert "chromium not installed" in result.stderr
    assert "apt-get install -y chromium" in result.stderr
