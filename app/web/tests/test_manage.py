"""The example app's manage.py, run as the image runs it (without a database here)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

MANAGE = Path(__file__).resolve().parent.parent / "manage.py"


def manage(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(MANAGE), *args],
        env={"PATH": "/usr/bin:/bin", **env},
        capture_output=True,
        text=True,
        timeout=20,
    )


def test_migrate_without_a_database_says_so_and_succeeds():
    result = manage("migrate", APP_VERSION="v7")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "migrate: app v7\nmigrate: no database configured\n"


def test_migrate_fails_on_request():
    result = manage("migrate", APP_MIGRATE_FAIL="1", DATABASE_URL="postgresql://nowhere/x")
    assert result.returncode == 1
    assert "failing on purpose (APP_MIGRATE_FAIL=1)" in result.stderr


def test_unknown_command_is_a_usage_error():
    result = manage("frobnicate")
    assert result.returncode == 2
    assert "usage: manage.py migrate | record-run JOB [SECONDS]" in result.stderr


def test_record_run_needs_a_job_name_and_a_database():
    assert manage("record-run").returncode == 2
    result = manage("record-run", "nightly", "0")
    assert result.returncode == 1
    assert "record-run: DATABASE_URL is not set" in result.stderr
    assert manage("record-run", "nightly", "soon", DATABASE_URL="postgresql://x/y").returncode == 2
