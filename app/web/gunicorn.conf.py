"""gunicorn settings, all read from environment variables.

+ APP_PORT (8000): port to listen on, all interfaces
+ GUNICORN_WORKERS (2): worker processes
+ GUNICORN_THREADS (8): threads per worker (gthread), so /slow never blocks others
+ GRACEFUL_TIMEOUT (30): seconds in-flight requests get to finish after SIGTERM
+ GUNICORN_KEEPALIVE (75): seconds an idle keep-alive connection is held open;
  kept above nginx's upstream keepalive_timeout (60s) so nginx, not gunicorn,
  closes idle upstream connections and never reuses one gunicorn just closed
"""

import os
import time


def _int_env(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SystemExit(f"{name} must be an integer, got {raw!r}") from None
    if value < 1:
        raise SystemExit(f"{name} must be at least 1, got {raw!r}")
    return value


# Start the APP_FAIL_AFTER_SECONDS clock once, in the master: forked workers
# inherit it, so every worker (and a worker respawned later) agrees on "start".
os.environ.setdefault("APP_STARTED_AT", repr(time.time()))

wsgi_app = "webapp:application"
chdir = os.path.dirname(os.path.abspath(__file__))
bind = [f"0.0.0.0:{_int_env('APP_PORT', 8000)}"]
worker_class = "gthread"
workers = _int_env("GUNICORN_WORKERS", 2)
threads = _int_env("GUNICORN_THREADS", 8)
graceful_timeout = _int_env("GRACEFUL_TIMEOUT", 30)
keepalive = _int_env("GUNICORN_KEEPALIVE", 75)
# Worker heartbeat; gthread beats from its main loop, so a long /slow is not killed.
timeout = 30
# Heartbeat files on tmpfs: /tmp may be slow overlayfs or read-only.
worker_tmp_dir = "/dev/shm"
proc_name = "deploykit-app"

# One access line per request on stdout, errors on stderr (Docker collects both).
accesslog = "-"
errorlog = "-"
loglevel = "info"
access_log_format = '%(h)s xff="%({x-forwarded-for}i)s" "%(r)s" %(s)s %(B)s %(M)sms ua="%(a)s"'
