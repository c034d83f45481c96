"""In-process tests of the example WSGI app (webapp.py); no Docker, no network.

Run inside the built image by `make -C app test`, or on any machine with pytest:
`python3 -m pytest app/web/tests`."""

from __future__ import annotations

import json
import os
import time

import pytest
from app_under_test import call, load_module


def _load_webapp():
    return load_module("webapp.py", "deploykit_example_webapp")


webapp = _load_webapp()


class FakeClock:
    """A wall clock the test moves by hand."""

    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_version_returns_app_version():
    app = webapp.make_app({"APP_VERSION": "v2"})
    code, headers, body = call(app, "/version")
    assert (code, body) == (200, "v2")
    assert headers["Content-Type"].startswith("text/plain")
    assert headers["Content-Length"] == "2"


def test_version_defaults_to_dev_when_unset():
    code, _, body = call(webapp.make_app({}), "/version")
    assert (code, body) == (200, "dev")


def test_up_is_ok_normally():
    code, _, body = call(webapp.make_app({"APP_VERSION": "v1"}), "/up")
    assert (code, body) == (200, "ok")


@pytest.mark.parametrize("flag", ["1", "true", "yes"])
def test_up_is_503_when_broken(flag):
    app = webapp.make_app({"APP_VERSION": "broken", "APP_BROKEN": flag})
    code, headers, body = call(app, "/up")
    assert (code, body) == (503, "broken")
    assert headers["X-App-Version"] == "broken"


def test_broken_app_still_serves_other_endpoints():
    app = webapp.make_app({"APP_VERSION": "broken", "APP_BROKEN": "1"})
    assert call(app, "/version")[:3:2] == (200, "broken")


@pytest.mark.parametrize("flag", ["0", "", "false"])
def test_up_is_ok_when_broken_flag_is_off(flag):
    assert call(webapp.make_app({"APP_BROKEN": flag}), "/up")[0] == 200


def test_unexpected_broken_flag_is_an_error():
    with pytest.raises(ValueError, match="APP_BROKEN"):
        webapp.make_app({"APP_BROKEN": "maybe"})


def test_index_shows_version_and_hostname():
    app = webapp.make_app({"APP_VERSION": "v3"}, hostname="web-7")
    code, _, body = call(app, "/")
    assert code == 200
    assert body == "deploykit example app version=v3 host=web-7\n"


def test_slow_sleeps_about_ms_then_returns_version():
    app = webapp.make_app({"APP_VERSION": "v2"})
    started = time.monotonic()
    code, _, body = call(app, "/slow", query="ms=200")
    elapsed = time.monotonic() - started
    assert (code, body) == (200, "v2")
    assert 0.19 <= elapsed < 1.0


@pytest.mark.parametrize(
    "query, expected_seconds",
    [
        ("ms=800", 0.8),
        ("ms=30000", 30.0),
        ("ms=999999", 30.0),  # capped at SLOW_MAX_MS
        ("ms=-5", 0.0),
        ("", 1.0),  # SLOW_DEFAULT_MS
    ],
)
def test_slow_sleep_is_capped_and_defaulted(query, expected_seconds):
    slept: list[float] = []
    app = webapp.make_app({"APP_VERSION": "v1"}, sleep=slept.append)
    code, _, body = call(app, "/slow", query=query)
    assert (code, body) == (200, "v1")
    assert slept == [pytest.approx(expected_seconds)]


def test_slow_rejects_non_integer_ms():
    slept: list[float] = []
    app = webapp.make_app({}, sleep=slept.append)
    code, _, _ = call(app, "/slow", query="ms=soon")
    assert code == 400
    assert slept == []


def test_unknown_path_is_404():
    code, headers, _ = call(webapp.make_app({"APP_VERSION": "v1"}), "/nope")
    assert code == 404
    assert headers["X-App-Version"] == "v1"


def test_non_get_method_is_405():
    code, headers, _ = call(webapp.make_app({}), "/version", method="POST")
    assert code == 405
    assert headers["Allow"] == "GET, HEAD"


def test_head_sends_headers_without_body():
    code, headers, body = call(webapp.make_app({"APP_VERSION": "v9"}), "/version", method="HEAD")
    assert (code, body) == (200, "")
    assert headers["Content-Length"] == "2"
    assert headers["X-App-Version"] == "v9"


@pytest.mark.parametrize("path", ["/", "/version", "/up", "/slow", "/missing"])
def test_every_response_carries_version_header(path):
    app = webapp.make_app({"APP_VERSION": "v5"}, sleep=lambda _s: None)
    _, headers, _ = call(app, path, query="ms=0")
    assert headers["X-App-Version"] == "v5"


def test_fail_after_seconds_fails_traffic_but_not_up():
    clock = FakeClock()
    app = webapp.make_app(
        {"APP_VERSION": "v2", "APP_FAIL_AFTER_SECONDS": "5"},
        clock=clock,
        sleep=lambda _s: None,
    )
    for path in ("/", "/version", "/slow", "/up"):
        assert call(app, path)[0] == 200, path

    clock.now += 4.9
    assert call(app, "/version")[0] == 200

    clock.now += 0.1
    for path in ("/", "/version", "/slow"):
        code, headers, _ = call(app, path)
        assert code == 500, path
        assert headers["X-App-Version"] == "v2"
    assert call(app, "/up")[:3:2] == (200, "ok")
    assert call(app, "/missing")[0] == 404


def test_fail_after_counts_from_app_started_at():
    # gunicorn.conf.py sets APP_STARTED_AT once in the master so all workers agree.
    clock = FakeClock(now=1_000.0)
    app = webapp.make_app({"APP_FAIL_AFTER_SECONDS": "10", "APP_STARTED_AT": "995"}, clock=clock)
    assert call(app, "/version")[0] == 200
    clock.now = 1_005.0
    assert call(app, "/version")[0] == 500


def test_fail_after_zero_fails_at_once():
    app = webapp.make_app({"APP_FAIL_AFTER_SECONDS": "0"}, clock=FakeClock())
    assert call(app, "/version")[0] == 500
    assert call(app, "/up")[0] == 200


def test_no_fail_after_never_fails():
    clock = FakeClock()
    app = webapp.make_app({"APP_FAIL_AFTER_SECONDS": ""}, clock=clock)
    clock.now += 10**9
    assert call(app, "/version")[0] == 200


@pytest.mark.parametrize("value", ["soon", "-1"])
def test_bad_fail_after_is_an_error(value):
    with pytest.raises(ValueError, match="APP_FAIL_AFTER_SECONDS"):
        webapp.make_app({"APP_FAIL_AFTER_SECONDS": value})


def test_module_application_reads_process_environment(monkeypatch):
    monkeypatch.setenv("APP_VERSION", "from-env")
    monkeypatch.delenv("APP_BROKEN", raising=False)
    monkeypatch.delenv("APP_FAIL_AFTER_SECONDS", raising=False)
    module = _load_webapp()  # fresh module: `application` is built on first access
    assert call(module.application, "/version")[:3:2] == (200, "from-env")


def test_the_app_is_healthy_with_the_environment_it_runs_in():
    """Inside the built image this reads what the build baked in (APP_BROKEN,
    APP_FAIL_AFTER_SECONDS): a build whose own settings fail its health check is stopped
    here, before `make release` pushes it."""
    module = _load_webapp()
    code, _, body = call(module.application, "/up")
    broken = os.environ.get("APP_BROKEN")
    assert code == 200, f"/up answers {code} {body!r} with APP_BROKEN={broken!r}"


class FakeCursor:
    def __init__(self, row):
        self.row = row
        self.executed: list[str] = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def execute(self, sql):
        self.executed.append(sql)

    def fetchone(self):
        return self.row


class FakeConnection:
    def __init__(self, row):
        self.cursor_ = FakeCursor(row)
        self.closed = False

    def cursor(self):
        return self.cursor_

    def close(self):
        self.closed = True


URL = "postgres://app:s3cret@10.0.0.41:5432/app?sslmode=require"


def test_db_is_503_when_database_url_is_unset():
    def connect(url):
        raise AssertionError("must not connect without DATABASE_URL")

    code, headers, body = call(webapp.make_app({}, connect=connect), "/db")
    assert code == 503
    assert headers["Content-Type"] == "application/json"
    assert json.loads(body) == {"error": "DATABASE_URL is not set"}


def test_db_is_503_with_a_short_error_when_the_database_is_unreachable():
    def connect(url):
        assert url == URL
        raise OSError(
            'connection to server at "10.0.0.41", port 5432 failed: timeout expired\n'
            "password was s3cret\n"
        )

    code, _, body = call(webapp.make_app({"DATABASE_URL": URL}, connect=connect), "/db")
    assert code == 503
    assert json.loads(body) == {
        "error": 'database unreachable: connection to server at "10.0.0.41", port 5432 failed: '
        "timeout expired"
    }


def test_db_never_shows_the_password_in_an_error():
    def connect(url):
        raise RuntimeError("cannot use password s3cret")

    code, _, body = call(webapp.make_app({"DATABASE_URL": URL}, connect=connect), "/db")
    assert code == 503 and "s3cret" not in body and "********" in body


def test_db_reports_the_server_and_tls_in_use():
    connection = FakeConnection(("PostgreSQL 15.18 (Debian 15.18-0+deb12u1)", True, "TLSv1.3"))
    app = webapp.make_app({"DATABASE_URL": URL}, connect=lambda url: connection)
    code, headers, body = call(app, "/db")
    assert code == 200 and headers["Content-Type"] == "application/json"
    assert json.loads(body) == {
        "server_version": "PostgreSQL 15.18 (Debian 15.18-0+deb12u1)",
        "ssl": True,
        "ssl_version": "TLSv1.3",
    }
    assert connection.cursor_.executed == [webapp.DB_QUERY] and connection.closed
