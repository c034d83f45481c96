"""Open-loop HTTP load generator that proves (or disproves) zero failed requests during a deploy.

The integration tests start this module as a subprocess, run a rolling deploy behind HAProxy,
send SIGTERM, and assert on the JSON it writes; ``make demo`` runs it in the foreground.

Design decisions, and why:

* **Open loop.** Request *n* is due at ``n / rate`` seconds after the start, whatever happened
  to earlier requests. A closed-loop client slows down when the server does, which hides exactly
  the stalls a rolling deploy can cause; here a slow server shows up as latency and concurrency.
* **gevent without monkey-patching.** Connections are opened with ``gevent.socket`` and wrapped
  with a ``gevent.ssl`` context explicitly, so the generator behaves the same from the CLI and
  from an unpatched host process, and gevent is imported lazily: ``summarize`` and the record
  types can be imported (e.g. by pytest) without gevent ever being loaded.
* **Realistic client mix.** Part of the traffic reuses persistent HTTP/1.1 connections (what
  browsers and API clients do), the rest opens a fresh connection per request; every Nth request
  is ``/slow`` so that requests are in flight while a backend is drained.
* **Stale keep-alive retry, counted separately.** A *reused* idle connection that the server had
  already closed fails before a single response byte arrives. Browsers and HTTP client libraries
  transparently retry idempotent requests once in that case, so we do too, but we report every
  such retry as ``stale_retries`` so that a test can still see and bound them. Anything else
  (fresh-connection errors, partial responses, timeouts, non-200 statuses) is a failure.
* **Robust shutdown.** SIGTERM/SIGINT stop scheduling and wait (bounded) for in-flight requests;
  a second signal abandons them. Results are written atomically and the exit code is 0 no matter
  how many requests failed, because the caller asserts on the JSON rather than on the exit code.
"""

from __future__ import annotations

import argparse
import http.client
import json
import math
import os
import random
import signal
import socket
import ssl
import sys
import tempfile
import time
import urllib.parse
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterable, Sequence, TextIO

if TYPE_CHECKING:  # pragma: no cover - typing only; gevent is imported lazily at run time
    import gevent.event
    import gevent.pool

DEFAULT_RATE = 150.0
DEFAULT_PATH = "/version"
DEFAULT_SLOW_MS = 800
DEFAULT_KEEPALIVE_SHARE = 0.5
DEFAULT_TIMEOUT_S = 10.0
DEFAULT_MAX_INFLIGHT = 500
DEFAULT_DRAIN_TIMEOUT_S = 35.0
VERSION_HEADER = "X-App-Version"
USER_AGENT = "bench-loadgen/1"

#: Failure examples kept in the summary; enough to debug, small enough to read in a test log.
FAILURE_EXAMPLES = 10
#: Idle keep-alive connections kept per target; a burst beyond this is closed, not hoarded.
MAX_IDLE_PER_TARGET = 64
#: Longest version string kept; guards the report against an endpoint returning a whole page.
MAX_VERSION_CHARS = 200

REASON_OVERLOAD = "overload"
REASON_TIMEOUT = "timeout"
REASON_ABANDONED = "abandoned"


# --------------------------------------------------------------------------------------------
# Records and the pure summary
# --------------------------------------------------------------------------------------------


@dataclass(slots=True)
class RequestRecord:
    """Outcome of one scheduled request; times are seconds since the start of the run."""

    seq: int
    url: str
    keepalive: bool
    slow: bool
    start: float
    end: float
    latency_ms: float
    ok: bool
    status: int | None = None
    #: Failure class (``http_503``, ``timeout``, ``overload``, exception name); None when ok.
    reason: str | None = None
    error: str | None = None
    version: str | None = None
    #: True when a stale reused keep-alive connection was replaced and the request re-sent.
    retried: bool = False
    #: How late the request started compared with its slot on the open-loop clock.
    lag_ms: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "url": self.url,
            "keepalive": self.keepalive,
            "slow": self.slow,
            "start": round(self.start, 6),
            "end": round(self.end, 6),
            "latency_ms": round(self.latency_ms, 3),
            "ok": self.ok,
            "status": self.status,
            "reason": self.reason,
            "error": self.error,
            "version": self.version,
            "retried": self.retried,
            "lag_ms": round(self.lag_ms, 3),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RequestRecord:
        return cls(**data)


def percentile(sorted_values: Sequence[float], pct: float) -> float | None:
    """Nearest-rank percentile: always an observed value, and exact for small samples."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(pct / 100.0 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def latency_stats(latencies_ms: Iterable[float]) -> dict[str, float | int | None]:
    values = sorted(latencies_ms)

    def pick(pct: float) -> float | None:
        value = percentile(values, pct)
        return None if value is None else round(value, 3)

    return {
        "count": len(values),
        "p50": pick(50),
        "p90": pick(90),
        "p99": pick(99),
        "max": round(values[-1], 3) if values else None,
    }


def run_lengths(items: Iterable[str]) -> list[list[Any]]:
    """Collapse consecutive repeats: ``a a b a`` -> ``[["a", 2], ["b", 1], ["a", 1]]``."""
    runs: list[list[Any]] = []
    for item in items:
        if runs and runs[-1][0] == item:
            runs[-1][1] += 1
        else:
            runs.append([item, 1])
    return runs


def _count_outcomes(records: Iterable[RequestRecord]) -> dict[str, int]:
    counts = {"sent": 0, "ok": 0, "failed": 0}
    for record in records:
        counts["sent"] += 1
        counts["ok" if record.ok else "failed"] += 1
    return counts


def failures_by_second(failed: Sequence[RequestRecord]) -> list[list]:
    """When the failures started, second by second: [[second, {reason: count}], ...] in
    order, so an outage reads against the deploy's own timeline."""
    seconds: dict[int, Counter] = {}
    for record in failed:
        seconds.setdefault(int(record.start), Counter())[record.reason or "unknown"] += 1
    return [[second, dict(reasons)] for second, reasons in sorted(seconds.items())]


def summarize(
    records: Iterable[RequestRecord], *, send_duration_s: float | None = None
) -> dict[str, Any]:
    """Aggregate request records into the result document the tests assert on.

    Pure: no clock, no I/O. ``send_duration_s`` is the length of the sending window; without it
    the achieved rate is estimated from the spread of request start times.
    """
    by_start = sorted(records, key=lambda r: (r.start, r.seq))
    failed = [r for r in by_start if not r.ok]
    ok = [r for r in by_start if r.ok]

    # Versions are ordered by completion, not by start: during a roll what matters is which
    # version answered at a given moment, and slow requests started earlier finish later.
    with_version = sorted(
        (r for r in by_start if r.version is not None), key=lambda r: (r.end, r.seq)
    )
    version_sequence = [r.version for r in with_version if r.version is not None]
    version_counts = Counter(version_sequence)
    first_seen = list(dict.fromkeys(version_sequence))

    if send_duration_s is None and len(by_start) > 1:
        send_duration_s = by_start[-1].start - by_start[0].start
    achieved_rate = round(len(by_start) / send_duration_s, 3) if send_duration_s else None

    started = [r for r in by_start if r.reason != REASON_OVERLOAD]
    lags = sorted(r.lag_ms for r in started)

    return {
        **_count_outcomes(by_start),
        "failures_by_reason": dict(Counter(r.reason or "unknown" for r in failed).most_common()),
        "failure_examples": [
            {
                "seq": r.seq,
                "t": round(r.start, 3),
                "url": r.url,
                "reason": r.reason,
                "status": r.status,
                "error": r.error,
                "keepalive": r.keepalive,
                "slow": r.slow,
                "retried": r.retried,
            }
            for r in failed[:FAILURE_EXAMPLES]
        ],
        "failures_by_second": failures_by_second(failed),
        "stale_retries": sum(1 for r in by_start if r.retried),
        "send_duration_s": None if send_duration_s is None else round(send_duration_s, 3),
        "achieved_rate": achieved_rate,
        "latency_ms": {
            "fast": latency_stats(r.latency_ms for r in ok if not r.slow),
            "slow": latency_stats(r.latency_ms for r in ok if r.slow),
        },
        "schedule_lag_ms": {
            "p99": percentile(lags, 99),
            "max": lags[-1] if lags else None,
        },
        "versions_in_order": run_lengths(version_sequence),
        "versions_first_seen": first_seen,
        "version_counts": {version: version_counts[version] for version in first_seen},
        "per_url": {
            url: _count_outcomes(r for r in by_start if r.url == url)
            for url in dict.fromkeys(r.url for r in by_start)
        },
        "per_mode": {
            "keepalive": _count_outcomes(r for r in by_start if r.keepalive),
            "new_connection": _count_outcomes(r for r in by_start if not r.keepalive),
        },
    }


def format_summary(results: dict[str, Any]) -> str:
    """Render the result document for humans (``make demo``, test logs)."""

    def fmt(value: float | None) -> str:
        return "-" if value is None else f"{value:.1f}"

    lines = [
        f"loadgen: {results['sent']} sent in {fmt(results.get('send_duration_s'))} s "
        f"({fmt(results.get('achieved_rate'))} req/s achieved, "
        f"target {fmt(results.get('config', {}).get('rate'))}), "
        f"{results['ok']} ok, {results['failed']} failed, "
        f"{results['stale_retries']} stale keep-alive retries"
    ]
    for kind in ("fast", "slow"):
        stats = results["latency_ms"][kind]
        if stats["count"]:
            lines.append(
                f"  latency ms ({kind}, n={stats['count']}): p50 {fmt(stats['p50'])}  "
                f"p90 {fmt(stats['p90'])}  p99 {fmt(stats['p99'])}  max {fmt(stats['max'])}"
            )
    lag = results["schedule_lag_ms"]
    lines.append(f"  schedule lag ms: p99 {fmt(lag['p99'])}  max {fmt(lag['max'])}")
    if results["failures_by_reason"]:
        reasons = "  ".join(f"{k}={v}" for k, v in results["failures_by_reason"].items())
        lines.append(f"  failures: {reasons}")
        for example in results["failure_examples"][:5]:
            lines.append(
                f"    t={example['t']:.3f}s {example['url']} {example['reason']}"
                + (f" ({example['error']})" if example["error"] else "")
            )
    else:
        lines.append("  failures: none")
    runs = results["versions_in_order"]
    shown = " -> ".join(f"{version} x{count}" for version, count in runs[:12])
    more = f" -> ... ({len(runs) - 12} more runs)" if len(runs) > 12 else ""
    lines.append(f"  versions (completion order): {shown or '-'}{more}")
    if "stopped_by" in results:
        lines.append(
            f"  stopped by {results['stopped_by']}; drain {fmt(results.get('drain_s'))} s; "
            f"abandoned {results['failures_by_reason'].get(REASON_ABANDONED, 0)}"
        )
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# HTTP plumbing (gevent sockets, stale-connection detection)
# --------------------------------------------------------------------------------------------


class RequestTimeoutError(TimeoutError):
    """The whole exchange (connect, retry, headers, body) exceeded its time budget."""


class _NoResponseError(ConnectionError):
    """The connection failed before a single byte of the response arrived.

    Only in this state is a re-send of a GET on a reused connection indistinguishable from the
    first attempt, which is what makes the single stale-connection retry safe.
    """

    def __init__(self, cause: str, detail: str) -> None:
        super().__init__(detail)
        self.cause = cause


class _PeekingResponse(http.client.HTTPResponse):
    """Tells "closed before any response byte" apart from failures mid-response."""

    def begin(self) -> None:
        if self.headers is not None:  # already begun (http.client calls are idempotent here)
            return
        try:
            first = self.fp.peek(1)
        except (ConnectionError, ssl.SSLEOFError, ssl.SSLZeroReturnError) as exc:
            raise _NoResponseError(type(exc).__name__, str(exc)) from exc
        if not first:
            raise _NoResponseError(
                "RemoteDisconnected", "server closed the connection without a response"
            )
        super().begin()


class _GeventHTTPConnection(http.client.HTTPConnection):
    """HTTPConnection on a gevent socket, so no monkey-patching is needed anywhere."""

    response_class = _PeekingResponse

    def connect(self) -> None:
        from gevent import socket as gsocket

        self.sock = gsocket.create_connection((self.host, self.port), self.timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class _GeventHTTPSConnection(http.client.HTTPSConnection, _GeventHTTPConnection):
    """HTTPSConnection whose ``super().connect()`` resolves to the gevent TCP connect above.

    The MRO (HTTPS -> gevent HTTP -> stdlib HTTP) keeps the stdlib TLS wrapping code; the
    context passed in must be a ``gevent.ssl.SSLContext`` so the TLS socket is cooperative too.
    """

    response_class = _PeekingResponse


@dataclass(frozen=True, slots=True)
class Target:
    """One load-balancer endpoint; ``url`` doubles as the label in records and reports."""

    url: str
    https: bool
    host: str
    port: int
    prefix: str

    @classmethod
    def parse(cls, url: str) -> Target:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"unsupported url {url!r}: expected http(s)://host[:port]")
        https = parts.scheme == "https"
        return cls(
            url=url,
            https=https,
            host=parts.hostname,
            port=parts.port or (443 if https else 80),
            prefix=parts.path.rstrip("/"),
        )


def _reason_for(exc: BaseException) -> str:
    if isinstance(exc, _NoResponseError):
        return exc.cause
    if isinstance(exc, TimeoutError):  # includes socket.timeout and RequestTimeoutError
        return REASON_TIMEOUT
    return type(exc).__name__


# --------------------------------------------------------------------------------------------
# The generator
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LoadConfig:
    urls: tuple[str, ...]
    rate: float = DEFAULT_RATE
    path: str = DEFAULT_PATH
    #: Every Nth request *per target* is ``/slow``; per target so each LB gets slow requests.
    slow_every: int = 0
    slow_ms: int = DEFAULT_SLOW_MS
    keepalive_share: float = DEFAULT_KEEPALIVE_SHARE
    #: Budget per request; slow requests get ``slow_ms`` on top.
    timeout_s: float = DEFAULT_TIMEOUT_S
    max_inflight: int = DEFAULT_MAX_INFLIGHT
    drain_timeout_s: float = DEFAULT_DRAIN_TIMEOUT_S
    insecure: bool = False
    cafile: str | None = None
    #: Keep-alive vs new-connection is drawn from a seeded RNG: deterministic between runs, and
    #: not correlated with the round-robin target or the slow-request cadence.
    seed: int = 1

    def __post_init__(self) -> None:
        if not self.urls:
            raise ValueError("at least one url is required")
        for url in self.urls:
            Target.parse(url)
        if not self.rate > 0:
            raise ValueError("rate must be > 0")
        if not 0.0 <= self.keepalive_share <= 1.0:
            raise ValueError("keepalive_share must be within [0, 1]")
        if self.slow_every < 0 or self.slow_ms < 0:
            raise ValueError("slow_every and slow_ms must be >= 0")
        if self.max_inflight < 1:
            raise ValueError("max_inflight must be >= 1")
        if not self.path.startswith("/"):
            raise ValueError("path must start with '/'")
        if self.timeout_s <= 0 or self.drain_timeout_s < 0:
            raise ValueError("timeout must be > 0 and drain timeout >= 0")

    def as_dict(self) -> dict[str, Any]:
        return {
            "urls": list(self.urls),
            "rate": self.rate,
            "path": self.path,
            "slow_every": self.slow_every,
            "slow_ms": self.slow_ms,
            "keepalive_share": self.keepalive_share,
            "timeout_s": self.timeout_s,
            "max_inflight": self.max_inflight,
            "drain_timeout_s": self.drain_timeout_s,
            "insecure": self.insecure,
            "seed": self.seed,
        }


@dataclass(slots=True)
class _Planned:
    seq: int
    target: Target
    keepalive: bool
    slow: bool
    scheduled: float


@dataclass(slots=True)
class _Attempt:
    """Mutable per-request state, so a failure after a retry still reports the retry."""

    retried: bool = False
    status: int | None = None
    version: str | None = None


@dataclass
class _Progress:
    ok: int = 0
    failed: int = 0
    stale_retries: int = 0
    last_version: str | None = None
    failures: Counter[str] = field(default_factory=Counter)


class LoadGenerator:
    """In-process API: ``LoadGenerator(LoadConfig(urls=(...,), rate=150)).run(duration_s=30)``.

    ``run()`` blocks the calling thread (it drives the gevent hub of that thread) and returns
    the result document; ``records`` holds every request afterwards. ``stop()`` may be called
    from a signal handler, a greenlet or another thread: first call drains, second abandons.
    """

    def __init__(self, config: LoadConfig) -> None:
        self.config = config
        self._targets = [Target.parse(url) for url in config.urls]
        self._records: list[RequestRecord] = []
        self._inflight: dict[int, _Planned] = {}
        self._idle: dict[str, list[http.client.HTTPConnection]] = {t.url: [] for t in self._targets}
        self._progress = _Progress()
        self._t0 = 0.0
        self._loop: Any = None
        self._stop_event: gevent.event.Event | None = None
        self._abort_event: gevent.event.Event | None = None
        self._stop_reason: str | None = None
        self._pending_stop: str | None = None
        self._ssl_context: ssl.SSLContext | None = None

    @property
    def records(self) -> list[RequestRecord]:
        return list(self._records)

    # -- control ------------------------------------------------------------------------------

    def stop(self, reason: str = "stop()") -> None:
        """Request a graceful stop; safe from signal handlers and other threads."""
        loop = self._loop
        if loop is None:
            # Not running yet (e.g. SIGTERM during start-up): run() honours it immediately.
            self._pending_stop = self._pending_stop or reason
            return
        # Events belong to the hub's thread; hop onto it instead of touching them from here.
        loop.run_callback_threadsafe(self._on_stop, reason)

    def _on_stop(self, reason: str) -> None:
        assert self._stop_event is not None and self._abort_event is not None
        if not self._stop_event.is_set():
            self._stop_reason = reason
            self._stop_event.set()
        else:
            self._abort_event.set()

    # -- main loop ----------------------------------------------------------------------------

    def run(
        self,
        duration_s: float | None = None,
        *,
        progress_every_s: float = 0.0,
        progress_stream: TextIO | None = None,
    ) -> dict[str, Any]:
        """Send load until ``duration_s`` elapses or ``stop()`` is called, drain, summarize."""
        import gevent
        import gevent.event
        import gevent.pool

        if self._loop is not None:
            raise RuntimeError("a LoadGenerator can only run once")
        self._stop_event = gevent.event.Event()
        self._abort_event = gevent.event.Event()
        self._ssl_context = self._make_ssl_context()
        self._loop = gevent.get_hub().loop
        if self._pending_stop is not None:
            self._on_stop(self._pending_stop)

        pool = gevent.pool.Pool(self.config.max_inflight)
        started_at_unix = time.time()
        self._t0 = time.monotonic()
        reporter = None
        if progress_every_s > 0:
            stream = progress_stream or sys.stderr
            reporter = gevent.spawn(self._report_progress, pool, progress_every_s, stream)
        try:
            self._schedule(pool, duration_s)
            send_end = self._now()
            self._drain(pool)
        finally:
            if reporter is not None:
                reporter.kill(block=False)
            self._close_idle()
        finished = self._now()

        results = {
            "config": {**self.config.as_dict(), "duration_s": duration_s},
            "started_at_unix": round(started_at_unix, 3),
            "stopped_by": self._stop_reason or "duration",
            **summarize(self._records, send_duration_s=send_end),
            "duration_s": round(finished, 3),
            "drain_s": round(finished - send_end, 3),
        }
        return results

    def _now(self) -> float:
        return time.monotonic() - self._t0

    def _schedule(self, pool: gevent.pool.Pool, duration_s: float | None) -> None:
        assert self._stop_event is not None
        interval = 1.0 / self.config.rate
        rng = random.Random(self.config.seed)
        seq = 0
        while not self._stop_event.is_set():
            # Multiply rather than accumulate so float error cannot drift the clock.
            due = seq * interval
            if duration_s is not None and due >= duration_s:
                break
            delay = due - self._now()
            if delay > 0 and self._stop_event.wait(delay):
                break
            planned = self._plan(seq, due, rng)
            if pool.full():
                now = self._now()
                self._finish_record(
                    RequestRecord(
                        seq=seq,
                        url=planned.target.url,
                        keepalive=planned.keepalive,
                        slow=planned.slow,
                        start=now,
                        end=now,
                        latency_ms=0.0,
                        ok=False,
                        reason=REASON_OVERLOAD,
                        error=f"{self.config.max_inflight} requests already in flight",
                        lag_ms=(now - due) * 1000.0,
                    )
                )
            else:
                self._inflight[seq] = planned
                pool.spawn(self._execute, planned)
            seq += 1

    def _plan(self, seq: int, due: float, rng: random.Random) -> _Planned:
        target = self._targets[seq % len(self._targets)]
        nth_for_target = seq // len(self._targets) + 1
        every = self.config.slow_every
        return _Planned(
            seq=seq,
            target=target,
            keepalive=rng.random() < self.config.keepalive_share,
            slow=every > 0 and nth_for_target % every == 0,
            scheduled=due,
        )

    def _drain(self, pool: gevent.pool.Pool) -> None:
        """Wait for in-flight requests, bounded by the drain timeout and a second stop()."""
        assert self._abort_event is not None
        deadline = self._now() + self.config.drain_timeout_s
        while len(pool) and not self._abort_event.is_set():
            remaining = deadline - self._now()
            if remaining <= 0:
                break
            self._abort_event.wait(min(remaining, 0.05))
        if not self._inflight:
            return
        now = self._now()
        for planned in sorted(self._inflight.values(), key=lambda p: p.seq):
            self._finish_record(
                RequestRecord(
                    seq=planned.seq,
                    url=planned.target.url,
                    keepalive=planned.keepalive,
                    slow=planned.slow,
                    start=planned.scheduled,
                    end=now,
                    latency_ms=(now - planned.scheduled) * 1000.0,
                    ok=False,
                    reason=REASON_ABANDONED,
                    error="still in flight when the drain ended (timeout or second signal)",
                )
            )
        self._inflight.clear()  # late completions of killed greenlets are now ignored
        pool.kill(block=True, timeout=2.0)

    def _finish_record(self, record: RequestRecord) -> None:
        progress = self._progress
        if record.ok:
            progress.ok += 1
        else:
            progress.failed += 1
            progress.failures[record.reason or "unknown"] += 1
        if record.retried:
            progress.stale_retries += 1
        if record.version is not None:
            progress.last_version = record.version
        self._records.append(record)

    def _report_progress(self, pool: gevent.pool.Pool, every_s: float, stream: TextIO) -> None:
        import gevent

        while True:
            gevent.sleep(every_s)
            p = self._progress
            failures = " ".join(f"{k}={v}" for k, v in p.failures.most_common(3))
            print(
                f"loadgen: t={self._now():.0f}s ok={p.ok} failed={p.failed} "
                f"stale_retries={p.stale_retries} inflight={len(pool)} "
                f"version={p.last_version} {failures}".rstrip(),
                file=stream,
                flush=True,
            )

    # -- one request --------------------------------------------------------------------------

    def _execute(self, planned: _Planned) -> None:
        import gevent

        started = self._now()
        budget_s = self.config.timeout_s + (self.config.slow_ms / 1000.0 if planned.slow else 0)
        attempt = _Attempt()
        reason: str | None = None
        error: str | None = None
        try:
            with gevent.Timeout(budget_s, RequestTimeoutError(f"no response in {budget_s:g} s")):
                self._fetch(planned, budget_s, attempt)
            if attempt.status != 200:
                reason = f"http_{attempt.status}"
        except Exception as exc:  # every failure mode is data here, not a crash
            reason = _reason_for(exc)
            error = f"{type(exc).__name__}: {exc}"[:300]
        end = self._now()
        if self._inflight.pop(planned.seq, None) is None:
            return  # already recorded as abandoned by _drain
        self._finish_record(
            RequestRecord(
                seq=planned.seq,
                url=planned.target.url,
                keepalive=planned.keepalive,
                slow=planned.slow,
                start=started,
                end=end,
                latency_ms=(end - started) * 1000.0,
                ok=reason is None,
                status=attempt.status,
                reason=reason,
                error=error,
                version=attempt.version if reason is None else None,
                retried=attempt.retried,
                lag_ms=(started - planned.scheduled) * 1000.0,
            )
        )

    def _fetch(self, planned: _Planned, budget_s: float, attempt: _Attempt) -> None:
        target = planned.target
        if not planned.keepalive:
            conn = self._connection(target, budget_s)
            try:
                self._exchange(conn, planned, attempt, close=True)
            finally:
                conn.close()
            return

        conn, reused = self._checkout(target, budget_s)
        try:
            try:
                reusable = self._exchange(conn, planned, attempt, close=False)
            except _NoResponseError:
                conn.close()
                if not reused:
                    raise
                # The idle connection was closed by the server (drain/restart) before it saw
                # our request; re-send once on a fresh connection, like browsers do.
                attempt.retried = True
                conn = self._connection(target, budget_s)
                reusable = self._exchange(conn, planned, attempt, close=False)
        except BaseException:
            conn.close()
            raise
        self._checkin(target, conn, reusable)

    def _exchange(
        self,
        conn: http.client.HTTPConnection,
        planned: _Planned,
        attempt: _Attempt,
        *,
        close: bool,
    ) -> bool:
        """Send one GET and read the whole response; returns whether the connection is reusable."""
        if planned.slow:
            path = f"{planned.target.prefix}/slow?ms={self.config.slow_ms}"
        else:
            path = f"{planned.target.prefix}{self.config.path}"
        headers = {"User-Agent": USER_AGENT}
        if close:
            headers["Connection"] = "close"
        try:
            conn.request("GET", path, headers=headers)
        except ConnectionError as exc:
            # Nothing can have been answered yet; on a reused connection this is "stale".
            raise _NoResponseError(type(exc).__name__, str(exc)) from exc
        response = conn.getresponse()
        body = response.read()
        attempt.status = response.status
        if response.status == 200:
            version = response.getheader(VERSION_HEADER) or body.decode("utf-8", "replace")
            attempt.version = version.strip()[:MAX_VERSION_CHARS] or None
        return not response.will_close

    def _connection(self, target: Target, budget_s: float) -> http.client.HTTPConnection:
        if target.https:
            return _GeventHTTPSConnection(
                target.host, target.port, timeout=budget_s, context=self._ssl_context
            )
        return _GeventHTTPConnection(target.host, target.port, timeout=budget_s)

    def _checkout(self, target: Target, budget_s: float) -> tuple[http.client.HTTPConnection, bool]:
        idle = self._idle[target.url]
        if idle:
            conn = idle.pop()  # LIFO: the most recently used connection is the least stale
            conn.timeout = budget_s
            if conn.sock is not None:
                conn.sock.settimeout(budget_s)
            return conn, True
        return self._connection(target, budget_s), False

    def _checkin(self, target: Target, conn: http.client.HTTPConnection, reusable: bool) -> None:
        idle = self._idle[target.url]
        if reusable and conn.sock is not None and len(idle) < MAX_IDLE_PER_TARGET:
            idle.append(conn)
        else:
            conn.close()

    def _close_idle(self) -> None:
        for idle in self._idle.values():
            while idle:
                idle.pop().close()

    def _make_ssl_context(self) -> ssl.SSLContext | None:
        if not any(t.https for t in self._targets):
            return None
        import gevent.ssl

        context: ssl.SSLContext = gevent.ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        if self.config.insecure:
            # The sandbox load balancers use a self-signed certificate.
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        elif self.config.cafile:
            context.load_verify_locations(cafile=self.config.cafile)
        else:
            context.load_default_certs()
        return context


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench.loadgen",
        description="Open-loop HTTP load generator; runs until --duration or SIGINT/SIGTERM.",
    )
    parser.add_argument(
        "--url",
        action="append",
        required=True,
        help="target base url; repeat to spread requests round-robin (e.g. two load balancers)",
    )
    parser.add_argument("--rate", type=float, default=DEFAULT_RATE, help="requests per second")
    parser.add_argument(
        "--duration",
        type=float,
        default=None,
        help="seconds to send for; default: until SIGINT/SIGTERM",
    )
    parser.add_argument(
        "--slow-every", type=int, default=0, help="every Nth request per url is /slow (0: none)"
    )
    parser.add_argument("--slow-ms", type=int, default=DEFAULT_SLOW_MS, help="/slow?ms= value")
    parser.add_argument(
        "--keepalive-share",
        type=float,
        default=DEFAULT_KEEPALIVE_SHARE,
        help="share of requests sent over reused keep-alive connections (0..1)",
    )
    parser.add_argument("--path", default=DEFAULT_PATH, help="path of the normal requests")
    parser.add_argument("--json-out", help="write the result document (JSON) to this file")
    parser.add_argument(
        "--no-records", action="store_true", help="omit per-request records from --json-out"
    )
    parser.add_argument(
        "--insecure", action="store_true", help="do not verify TLS certificates (self-signed)"
    )
    parser.add_argument("--cacert", help="CA bundle to verify TLS certificates with")
    parser.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT_S,
        help="per-request budget in seconds (slow requests get --slow-ms on top)",
    )
    parser.add_argument(
        "--max-inflight",
        type=int,
        default=DEFAULT_MAX_INFLIGHT,
        help="concurrency cap; requests beyond it fail with reason 'overload'",
    )
    parser.add_argument(
        "--drain-timeout",
        type=float,
        default=DEFAULT_DRAIN_TIMEOUT_S,
        help="after stopping, seconds to wait for in-flight requests",
    )
    parser.add_argument("--seed", type=int, default=1, help="seed for the keep-alive mix")
    parser.add_argument(
        "--progress",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="print a progress line to stderr every SECONDS (0: off)",
    )
    return parser


def dumps_results(document: dict[str, Any]) -> str:
    """Summary indented for humans; records one compact line each, so long runs stay small."""
    head = {key: value for key, value in document.items() if key != "records"}
    text = json.dumps(head, indent=1)
    if "records" not in document:
        return text + "\n"
    lines = ",\n".join("  " + json.dumps(r, separators=(",", ":")) for r in document["records"])
    # ``text`` ends with "\n}": reopen the object to append the records array.
    return f'{text[:-2]},\n "records": [\n{lines}\n ]\n}}\n'


def write_json_atomic(path: str, document: dict[str, Any]) -> None:
    """Readers polling for the file must never see it half-written."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp_path = tempfile.mkstemp(prefix=".loadgen-", suffix=".json", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(dumps_results(document))
        os.replace(tmp_path, path)
    except BaseException:
        try:
            os.unlink(tmp_path)
        except FileNotFoundError:
            pass
        raise


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        config = LoadConfig(
            urls=tuple(args.url),
            rate=args.rate,
            path=args.path,
            slow_every=args.slow_every,
            slow_ms=args.slow_ms,
            keepalive_share=args.keepalive_share,
            timeout_s=args.timeout,
            max_inflight=args.max_inflight,
            drain_timeout_s=args.drain_timeout,
            insecure=args.insecure,
            cafile=args.cacert,
            seed=args.seed,
        )
    except ValueError as exc:
        parser.error(str(exc))
    if args.duration is not None and args.duration <= 0:
        parser.error("--duration must be > 0")

    generator = LoadGenerator(config)

    # Plain Python handlers, installed for the whole life of the process: they work before the
    # hub exists, while it runs (gevent runs pending Python signal handlers promptly) and while
    # the results are written, so no signal can ever kill us between "stopped" and "written".
    def on_signal(signum: int, _frame: object) -> None:
        generator.stop(f"signal {signal.Signals(signum).name}")

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    until = f"for {args.duration:g} s" if args.duration else "until SIGINT/SIGTERM"
    print(
        f"loadgen: started, {config.rate:g} req/s to {', '.join(config.urls)} {until}",
        file=sys.stderr,
        flush=True,
    )
    results = generator.run(args.duration, progress_every_s=args.progress)
    if args.json_out:
        document = dict(results)
        if not args.no_records:
            document["records"] = [r.to_json() for r in generator.records]
        write_json_atomic(args.json_out, document)
    try:
        print(format_summary(results), flush=True)
    except BrokenPipeError:  # the JSON is what matters; a closed stdout is not a failure
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
