"""A tiny WSGI app that stands in for the user's own web app (stdlib only).

It exists so rollouts can be tested end to end: every response says which
version answered, ``/up`` is the health check HAProxy and Docker poll, and
``/slow`` keeps a request in flight across a drain or a SIGTERM.

Configuration comes only from environment variables, read once by
``make_app`` (gunicorn workers call it at import time through ``application``):

+ APP_VERSION: the deployed tag, returned by ``/version`` and in ``X-App-Version``
+ APP_BROKEN: ``1`` makes ``/up`` always answer 503 (the "broken" image bakes it in)
+ APP_FAIL_AFTER_SECONDS: after that many seconds from start, ``/``, ``/version``
  and ``/slow`` answer 500 while ``/up`` stays 200 (passes its own health check,
  then fails behind the load balancer)
+ APP_STARTED_AT: epoch seconds the fail-after clock starts from; gunicorn.conf.py
  sets it once in the master so every worker agrees (defaults to now)
+ DATABASE_URL: the PostgreSQL the app uses (``postgres://user:password@host:5432/db
  ?sslmode=require``); ``/db`` connects with it and reports the server and the TLS
  in use, or answers 503 when it is unset or the database cannot be reached
+ REDIS_URL: the job queue (worker.py); ``POST /jobs`` queues a job
  (``{"seconds": 2}``) and returns its id, ``GET /jobs/<id>`` reports its status;
  both answer 503 without it
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import socket
import time
from typing import Callable, Iterable, Mapping
from urllib.parse import parse_qs

# Longest sleep /slow accepts, so a typo cannot pin a worker thread for hours.
SLOW_MAX_MS = 30_000
# Sleep used by /slow when no ?ms= is given.
SLOW_DEFAULT_MS = 1_000
# Seconds /db waits for the database before answering 503.
DB_CONNECT_TIMEOUT_S = 3
# The server, and the TLS protocol of this very connection ("ssl" false without TLS).
DB_QUERY = "SELECT version(), ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()"

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"", "0", "false", "no", "off"}

_REASONS = {
    200: "OK",
    201: "Created",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    500: "Internal Server Error",
    503: "Service Unavailable",
}

StartResponse = Callable[..., object]
WSGIApp = Callable[[dict, StartResponse], Iterable[bytes]]


def parse_flag(name: str, value: str | None) -> bool:
    """Read an on/off environment variable; anything unexpected is an error."""
    text = (value or "").strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError(f"{name} must be one of 1/0/true/false/yes/no/on/off, got {value!r}")


def parse_seconds(name: str, value: str | None) -> float | None:
    """Read an optional non-negative number of seconds."""
    if value is None or value.strip() == "":
        return None
    try:
        seconds = float(value)
    except ValueError:
        raise ValueError(f"{name} must be a number of seconds, got {value!r}") from None
    if seconds < 0:
        raise ValueError(f"{name} must not be negative, got {value!r}")
    return seconds


def connect_postgres(url: str):
    """A psycopg2 connection (imported here: only /db needs the driver)."""
    import psycopg2

    return psycopg2.connect(url, connect_timeout=DB_CONNECT_TIMEOUT_S)


def describe_database(url: str, connect: Callable[[str], object]) -> tuple[int, dict]:
    """(200, server and TLS facts) or (503, a one-line error without the password)."""
    try:
        connection = connect(url)
        try:
            with connection.cursor() as cursor:
                cursor.execute(DB_QUERY)
                server_version, ssl, ssl_version = cursor.fetchone()
        finally:
            connection.close()
    except Exception as error:  # noqa: BLE001 - any driver or network failure: unreachable
        first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
        password = re.match(r"[a-z]+://[^:/@]*:([^@]*)@", url)
        if password and password.group(1):
            first_line = first_line.replace(password.group(1), "********")
        return 503, {"error": f"database unreachable: {first_line}"}
    return 200, {"server_version": server_version, "ssl": bool(ssl), "ssl_version": ssl_version}


def make_app(
    config: Mapping[str, str] | None = None,
    *,
    clock: Callable[[], float] = time.time,
    sleep: Callable[[float], None] = time.sleep,
    hostname: str | None = None,
    connect: Callable[[str], object] = connect_postgres,
    redis_client: object | None = None,
) -> WSGIApp:
    """Build the WSGI callable from an environment-like mapping.

    + config: environment variables (defaults to ``os.environ``)
    + clock: wall clock in epoch seconds (injectable for tests)
    + sleep: used by /slow (injectable for tests)
    + hostname: shown by ``/`` (defaults to the container's hostname)
    + connect: opens a database connection from DATABASE_URL (injectable for tests)
    + redis_client: the job queue's client (defaults to one for REDIS_URL, made on
      the first /jobs request)
    """
    env = os.environ if config is None else config
    version = env.get("APP_VERSION", "").strip() or "dev"
    broken = parse_flag("APP_BROKEN", env.get("APP_BROKEN"))
    fail_after = parse_seconds("APP_FAIL_AFTER_SECONDS", env.get("APP_FAIL_AFTER_SECONDS"))
    started_at = parse_seconds("APP_STARTED_AT", env.get("APP_STARTED_AT"))
    if started_at is None:
        started_at = clock()
    host = hostname or socket.gethostname()
    database_url = env.get("DATABASE_URL", "").strip()

    def failing() -> bool:
        return fail_after is not None and clock() - started_at >= fail_after

    def index(_query: dict) -> tuple[int, str]:
        return 200, f"deploykit example app version={version} host={host}\n"

    def show_version(_query: dict) -> tuple[int, str]:
        return 200, version

    def up(_query: dict) -> tuple[int, str]:
        # /up ignores APP_FAIL_AFTER_SECONDS on purpose: that mode models an app
        # whose own health check stays green while real traffic fails.
        return (503, "broken") if broken else (200, "ok")

    def slow(query: dict) -> tuple[int, str]:
        raw = query.get("ms", [str(SLOW_DEFAULT_MS)])[-1]
        try:
            ms = int(raw)
        except ValueError:
            return 400, f"ms must be an integer number of milliseconds, got {raw!r}\n"
        ms = max(0, min(ms, SLOW_MAX_MS))
        sleep(ms / 1000.0)
        return 200, version

    def database(_query: dict) -> tuple[int, str, str]:
        if not database_url:
            status, facts = 503, {"error": "DATABASE_URL is not set"}
        else:
            status, facts = describe_database(database_url, connect)
        return status, json.dumps(facts) + "\n", "application/json"

    # path -> (handler, affected by APP_FAIL_AFTER_SECONDS)
    # A handler answers (status, body) or (status, body, content type).
    routes: dict[str, tuple[Callable[[dict], tuple], bool]] = {
        "/": (index, True),
        "/version": (show_version, True),
        "/up": (up, False),
        "/slow": (slow, True),
        "/db": (database, True),
    }

    jobs = _JobsEndpoints(env.get("REDIS_URL", "").strip(), redis_client)

    def application(environ: dict, start_response: StartResponse) -> Iterable[bytes]:
        method = environ.get("REQUEST_METHOD", "GET").upper()
        path = environ.get("PATH_INFO", "") or "/"
        extra: list[tuple[str, str]] = []
        content_type = "text/plain; charset=utf-8"
        route = routes.get(path)
        if path == "/jobs" or path.startswith("/jobs/"):
            status, body, allowed = jobs.handle(method, path, environ)
            if allowed:
                extra.append(("Allow", allowed))
        elif route is None:
            status, body = 404, "not found\n"
        elif method not in ("GET", "HEAD"):
            status, body = 405, "method not allowed\n"
            extra.append(("Allow", "GET, HEAD"))
        else:
            handler, can_fail = route
            if can_fail and failing():
                status, body = 500, "failing (APP_FAIL_AFTER_SECONDS)\n"
            else:
                status, body, *typed = handler(parse_qs(environ.get("QUERY_STRING", "")))
                content_type = typed[0] if typed else content_type
        payload = body.encode("utf-8")
        headers = [
            ("Content-Type", content_type),
            ("Content-Length", str(len(payload))),
            ("Cache-Control", "no-store"),
            ("X-App-Version", version),
            *extra,
        ]
        start_response(f"{status} {_REASONS[status]}", headers)
        return [b""] if method == "HEAD" else [payload]

    return application


class _JobsEndpoints:
    """POST /jobs and GET /jobs/<id>, over the queue helpers of worker.py (same image)."""

    def __init__(self, redis_url: str, client: object | None):
        self.redis_url = redis_url
        self.client = client
        self._queue = None

    def queue(self):
        if self._queue is None:
            # Loaded by path: app/web is an image build context, not a package.
            path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "worker.py")
            spec = importlib.util.spec_from_file_location("deploykit_example_worker", path)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            self._queue = module
        return self._queue

    def handle(self, method: str, path: str, environ: dict) -> tuple[int, str, str | None]:
        """(status, JSON body, Allow header or None)."""
        queue = self.queue()
        if self.client is None:
            if not self.redis_url:
                return 503, '{"error": "REDIS_URL is not set"}\n', None
            self.client = queue.connect(self.redis_url)
        if path == "/jobs":
            if method != "POST":
                return 405, '{"error": "method not allowed"}\n', "POST"
            try:
                length = int(environ.get("CONTENT_LENGTH") or 0)
                request = json.loads(environ["wsgi.input"].read(length) or b"{}")
                job_id = queue.enqueue(self.client, request.get("seconds", 1))
            except (ValueError, TypeError, AttributeError) as error:
                return 400, json.dumps({"error": str(error)}) + "\n", None
            return 201, json.dumps({"id": job_id, "status": "queued"}) + "\n", None
        if method not in ("GET", "HEAD"):
            return 405, '{"error": "method not allowed"}\n', "GET, HEAD"
        status = queue.job_status(self.client, path[len("/jobs/") :])
        if status is None:
            return 404, '{"error": "no such job"}\n', None
        return 200, json.dumps(status, sort_keys=True) + "\n", None


def __getattr__(name: str) -> WSGIApp:
    # Built lazily so importing the module (tests, tooling) never reads the
    # environment; gunicorn's "webapp:application" lookup lands here.
    if name == "application":
        app = make_app()
        globals()["application"] = app
        return app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
