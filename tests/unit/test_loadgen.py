"""Tests for bench.loadgen.

``summarize`` is tested in-process (it is pure and importing bench.loadgen does not load gevent).
Everything that sends traffic runs the generator as a subprocess, so this pytest process never
imports gevent, against a throw-away threaded HTTP server bound to 127.0.0.1 on a free port.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from bench.loadgen import (
    LoadConfig,
    RequestRecord,
    dumps_results,
    format_summary,
    percentile,
    run_lengths,
    summarize,
)

REPO_ROOT = Path(__file__).resolve().parents[2]

# A tiny HTTP/1.1 server with knobs for the failure modes the generator must classify.
SERVER_SCRIPT = textwrap.dedent("""
    import argparse, ssl, sys, threading, time
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    from urllib.parse import parse_qs, urlsplit

    parser = argparse.ArgumentParser()
    parser.add_argument("--version", default="v1")
    parser.add_argument("--next-version")
    parser.add_argument("--switch-after", type=float, default=0.0)
    parser.add_argument("--fail-every", type=int, default=0)
    parser.add_argument("--drop-reused", action="store_true")
    parser.add_argument("--drop-all", action="store_true")
    parser.add_argument("--no-header", action="store_true")
    parser.add_argument("--tls", nargs=2, metavar=("CERT", "KEY"))
    args = parser.parse_args()

    lock = threading.Lock()
    counter = [0]
    # The switch is timed from the first request, not from the server's start: a
    # generator that starts late on a busy machine must still see both versions.
    first_request_at = []

    def current_version():
        if not first_request_at:
            first_request_at.append(time.monotonic())
        if args.next_version and time.monotonic() - first_request_at[0] >= args.switch_after:
            return args.next_version
        return args.version

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # headers and body are separate writes

        def setup(self):
            super().setup()
            self.served = 0

        def log_message(self, *a):
            pass

        def do_GET(self):
            if args.drop_all or (args.drop_reused and self.served >= 1):
                # Read the request, then hang up without a byte of response.
                self.close_connection = True
                return
            self.served += 1
            with lock:
                counter[0] += 1
                n = counter[0]
            url = urlsplit(self.path)
            if url.path == "/slow":
                time.sleep(int(parse_qs(url.query).get("ms", ["0"])[0]) / 1000.0)
            elif url.path != "/version":
                return self.reply(404, b"not found")
            if args.fail_every and n % args.fail_every == 0:
                return self.reply(500, b"boom")
            self.reply(200, current_version().encode() + b"\\n")

        def reply(self, status, body):
            self.send_response(status)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            if status == 200 and not args.no_header:
                self.send_header("X-App-Version", body.decode().strip())
            self.end_headers()
            self.wfile.write(body)

    ThreadingHTTPServer.request_queue_size = 1024
    ThreadingHTTPServer.daemon_threads = True
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    if args.tls:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(*args.tls)
        server.socket = context.wrap_socket(server.socket, server_side=True)
    print(server.server_address[1], flush=True)
    server.serve_forever()
    """)


# --------------------------------------------------------------------------------------------
# summarize() and helpers
# --------------------------------------------------------------------------------------------


def rec(
    seq: int,
    *,
    start: float | None = None,
    end: float | None = None,
    latency_ms: float = 1.0,
    ok: bool = True,
    version: str | None = "v1",
    slow: bool = False,
    keepalive: bool = False,
    url: str = "http://127.0.0.1:1",
    reason: str | None = None,
    status: int | None = 200,
    retried: bool = False,
) -> RequestRecord:
    start = seq * 0.01 if start is None else start
    return RequestRecord(
        seq=seq,
        url=url,
        keepalive=keepalive,
        slow=slow,
        start=start,
        end=start + latency_ms / 1000.0 if end is None else end,
        latency_ms=latency_ms,
        ok=ok,
        status=status,
        reason=reason,
        version=version if ok else None,
        retried=retried,
    )


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50.0
    assert percentile(values, 90) == 90.0
    assert percentile(values, 99) == 99.0
    assert percentile(values, 100) == 100.0
    assert percentile([7.0], 99) == 7.0
    assert percentile([], 50) is None


def test_run_lengths_collapses_consecutive_repeats() -> None:
    assert run_lengths([]) == []
    assert run_lengths(["a", "a", "b", "a", "a", "a"]) == [["a", 2], ["b", 1], ["a", 3]]


def test_summarize_counts_percentiles_and_splits_slow_requests() -> None:
    fast = [rec(i, latency_ms=float(i + 1)) for i in range(100)]  # 1..100 ms
    slow = [rec(100 + i, latency_ms=800.0 + i, slow=True) for i in range(10)]
    result = summarize(fast + slow, send_duration_s=1.1)

    assert (result["sent"], result["ok"], result["failed"]) == (110, 110, 0)
    assert result["achieved_rate"] == 100.0
    assert result["latency_ms"]["fast"] == {
        "count": 100,
        "p50": 50.0,
        "p90": 90.0,
        "p99": 99.0,
        "max": 100.0,
    }
    assert result["latency_ms"]["slow"]["count"] == 10
    assert result["latency_ms"]["slow"]["p50"] == 804.0
    assert result["latency_ms"]["slow"]["max"] == 809.0
    assert result["failures_by_reason"] == {}
    assert result["failure_examples"] == []


def test_summarize_counts_failures_by_reason_with_examples_in_time_order() -> None:
    records = [rec(i) for i in range(20)]
    records += [
        rec(30, start=0.5, ok=False, reason="http_502", status=502),
        rec(31, start=0.2, ok=False, reason="ConnectionRefusedError", status=None),
        rec(32, start=0.9, ok=False, reason="http_502", status=502),
        rec(33, start=0.7, ok=False, reason="overload", status=None, latency_ms=0.0),
    ]
    result = summarize(records)

    assert (result["sent"], result["ok"], result["failed"]) == (24, 20, 4)
    assert result["failures_by_reason"] == {
        "http_502": 2,
        "ConnectionRefusedError": 1,
        "overload": 1,
    }
    examples = result["failure_examples"]
    assert [e["t"] for e in examples] == [0.2, 0.5, 0.7, 0.9]
    assert examples[0]["url"] == "http://127.0.0.1:1"
    assert examples[0]["reason"] == "ConnectionRefusedError"
    # Failed requests never contribute latency or versions.
    assert result["latency_ms"]["fast"]["count"] == 20
    assert result["version_counts"] == {"v1": 20}


def test_summarize_orders_versions_by_completion_time() -> None:
    records = [
        rec(0, start=0.0, end=0.01, version="v1"),
        # Started early but finished last: a slow request held by an old backend.
        rec(1, start=0.02, end=2.0, version="v1", slow=True),
        rec(2, start=0.03, end=0.04, version="v2"),
        rec(3, start=0.05, end=0.06, version="v1"),
        rec(4, start=0.07, end=0.08, version="v2"),
        rec(5, start=0.09, end=0.10, version="v2"),
        rec(6, start=0.11, end=0.12, ok=False, reason="http_503", status=503),
    ]
    result = summarize(records)

    assert result["versions_in_order"] == [["v1", 1], ["v2", 1], ["v1", 1], ["v2", 2], ["v1", 1]]
    assert result["versions_first_seen"] == ["v1", "v2"]
    assert result["version_counts"] == {"v1": 3, "v2": 3}


def test_summarize_reports_stale_retries_and_breakdowns() -> None:
    a, b = "http://127.0.0.1:1", "https://127.0.0.1:2"
    records = [
        rec(0, url=a, keepalive=True, retried=True),
        rec(1, url=b, keepalive=True),
        rec(2, url=a, keepalive=False),
        rec(3, url=b, keepalive=False, ok=False, reason="timeout", status=None),
    ]
    result = summarize(records, send_duration_s=0.04)

    assert result["stale_retries"] == 1
    assert result["per_url"] == {
        a: {"sent": 2, "ok": 2, "failed": 0},
        b: {"sent": 2, "ok": 1, "failed": 1},
    }
    assert result["per_mode"]["keepalive"] == {"sent": 2, "ok": 2, "failed": 0}
    assert result["per_mode"]["new_connection"] == {"sent": 2, "ok": 1, "failed": 1}


def test_summarize_empty_and_format_summary_do_not_crash() -> None:
    result = summarize([])
    assert (result["sent"], result["failed"], result["achieved_rate"]) == (0, 0, None)
    assert result["versions_in_order"] == []
    assert "0 sent" in format_summary(result)
    text = format_summary(summarize([rec(0), rec(1, ok=False, reason="http_500", status=500)]))
    assert "http_500=1" in text


def test_record_json_round_trip() -> None:
    record = rec(3, slow=True, keepalive=True, retried=True)
    assert RequestRecord.from_json(json.loads(json.dumps(record.to_json()))) == record


def test_dumps_results_is_valid_json_with_and_without_records() -> None:
    summary = summarize([rec(0), rec(1)])
    records = [rec(0).to_json(), rec(1).to_json()]
    assert json.loads(dumps_results({**summary, "records": records}))["records"] == records
    assert json.loads(dumps_results({**summary, "records": []}))["records"] == []
    assert "records" not in json.loads(dumps_results(summary))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"urls": ()},
        {"urls": ("ftp://127.0.0.1",)},
        {"urls": ("http://127.0.0.1:1",), "rate": 0},
        {"urls": ("http://127.0.0.1:1",), "keepalive_share": 1.5},
        {"urls": ("http://127.0.0.1:1",), "path": "version"},
    ],
)
def test_config_rejects_nonsense(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        LoadConfig(**kwargs)


# --------------------------------------------------------------------------------------------
# End to end: the generator as a subprocess against a local server
# --------------------------------------------------------------------------------------------


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), env.get("PYTHONPATH", "")]).rstrip(
        os.pathsep
    )
    return env


class Servers:
    """Starts test servers and stops exactly the processes it started."""

    def __init__(self, tmp_path: Path) -> None:
        self.script = tmp_path / "server.py"
        self.script.write_text(SERVER_SCRIPT)
        self.procs: list[subprocess.Popen[str]] = []

    def start(self, *args: str) -> tuple[subprocess.Popen[str], str]:
        proc = subprocess.Popen(
            [sys.executable, str(self.script), *args],
            stdout=subprocess.PIPE,
            text=True,
        )
        self.procs.append(proc)
        assert proc.stdout is not None
        port = int(proc.stdout.readline())
        scheme = "https" if "--tls" in args else "http"
        return proc, f"{scheme}://127.0.0.1:{port}"

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=10)


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[Servers]:
    started = Servers(tmp_path)
    try:
        yield started
    finally:
        started.stop_all()


def start_loadgen(tmp_path: Path, *args: str) -> tuple[subprocess.Popen[str], Path]:
    out = tmp_path / "result.json"
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.loadgen", "--json-out", str(out), *args],
        cwd=REPO_ROOT,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    return proc, out


def finish(proc: subprocess.Popen[str], out: Path, timeout: float = 30) -> dict[str, Any]:
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        stdout, stderr = proc.communicate()
        pytest.fail(f"loadgen did not exit in {timeout} s\n{stdout}\n{stderr}")
    assert proc.returncode == 0, f"exit {proc.returncode}\n{stdout}\n{stderr}"
    assert "loadgen:" in stdout  # the human summary
    result: dict[str, Any] = json.loads(out.read_text())
    assert result["ok"] + result["failed"] == result["sent"] == len(result["records"])
    return result


def run_loadgen(tmp_path: Path, *args: str, timeout: float = 30) -> dict[str, Any]:
    proc, out = start_loadgen(tmp_path, *args)
    return finish(proc, out, timeout)


def wait_for_start(proc: subprocess.Popen[str]) -> None:
    assert proc.stderr is not None
    assert "loadgen: started" in proc.stderr.readline()


def test_healthy_server_gets_every_request_at_the_target_rate(
    tmp_path: Path, servers: Servers
) -> None:
    _, url = servers.start("--version", "v1")
    result = run_loadgen(
        tmp_path, "--url", url, "--duration", "3", "--rate", "100", "--slow-every", "10",
        "--slow-ms", "200",
    )  # fmt: skip

    assert result["sent"] == 300
    assert result["failed"] == 0, result["failure_examples"]
    assert result["ok"] == 300
    assert result["stale_retries"] == 0
    assert 95 <= result["achieved_rate"] <= 105
    assert result["versions_in_order"] == [["v1", 300]]
    assert result["per_mode"]["keepalive"]["sent"] > 100
    assert result["per_mode"]["new_connection"]["sent"] > 100
    assert result["latency_ms"]["slow"]["count"] == 30
    assert result["latency_ms"]["slow"]["p50"] >= 200
    assert result["latency_ms"]["fast"]["count"] == 270
    assert result["stopped_by"] == "duration"


def test_version_read_from_body_when_header_missing_and_changes_in_order(
    tmp_path: Path, servers: Servers
) -> None:
    _, url = servers.start(
        "--no-header", "--version", "v1", "--next-version", "v2", "--switch-after", "1.0"
    )
    result = run_loadgen(tmp_path, "--url", url, "--duration", "2", "--rate", "50")

    assert result["failed"] == 0, result["failure_examples"]
    assert result["versions_first_seen"] == ["v1", "v2"]
    # Completion order, so a v1 answer that finished late may interleave around the switch.
    assert result["versions_in_order"][0][0] == "v1"
    assert result["versions_in_order"][-1][0] == "v2"
    assert len(result["versions_in_order"]) <= 4
    assert sum(result["version_counts"].values()) == result["sent"]


def test_server_errors_are_counted_as_failures(tmp_path: Path, servers: Servers) -> None:
    _, url = servers.start("--fail-every", "10")
    result = run_loadgen(tmp_path, "--url", url, "--duration", "2", "--rate", "100")

    assert result["sent"] == 200
    assert result["failed"] == 20
    assert result["failures_by_reason"] == {"http_500": 20}
    example = result["failure_examples"][0]
    assert example["url"] == url and example["status"] == 500 and example["t"] >= 0


def test_stale_keepalive_connections_are_retried_once_and_counted(
    tmp_path: Path, servers: Servers
) -> None:
    # Every reused connection is hung up on before any response byte: the stale case.
    _, url = servers.start("--drop-reused")
    result = run_loadgen(
        tmp_path, "--url", url, "--duration", "2", "--rate", "100", "--keepalive-share", "1"
    )

    assert result["failed"] == 0, result["failure_examples"]
    assert result["stale_retries"] > 20
    retried = [r for r in result["records"] if r["retried"]]
    assert all(r["ok"] and r["keepalive"] for r in retried)


def test_fresh_connections_are_never_retried(tmp_path: Path, servers: Servers) -> None:
    _, url = servers.start("--drop-all")
    result = run_loadgen(tmp_path, "--url", url, "--duration", "1", "--rate", "50")

    assert result["failed"] == result["sent"] == 50
    assert result["stale_retries"] == 0
    assert result["failures_by_reason"] == {"RemoteDisconnected": 50}


def test_server_going_away_mid_run_is_counted(tmp_path: Path, servers: Servers) -> None:
    server, url = servers.start()
    proc, out = start_loadgen(tmp_path, "--url", url, "--duration", "3", "--rate", "100")
    wait_for_start(proc)
    time.sleep(1.5)
    server.kill()
    result = finish(proc, out)

    assert result["sent"] == 300
    assert result["ok"] > 50
    assert result["failures_by_reason"].get("ConnectionRefusedError", 0) > 50


def test_sigterm_stops_drains_in_flight_requests_and_writes_results(
    tmp_path: Path, servers: Servers
) -> None:
    _, url = servers.start()
    proc, out = start_loadgen(
        tmp_path, "--url", url, "--rate", "100", "--slow-every", "5", "--slow-ms", "700"
    )
    wait_for_start(proc)
    time.sleep(1.5)
    proc.send_signal(signal.SIGTERM)
    result = finish(proc, out)

    assert result["stopped_by"] == "signal SIGTERM"
    assert 100 <= result["sent"] <= 250
    assert result["failed"] == 0, result["failure_examples"]
    # Slow requests that were in flight at SIGTERM were waited for, not dropped.
    assert result["latency_ms"]["slow"]["count"] >= 20
    assert result["drain_s"] >= 0.3


def test_second_signal_or_drain_timeout_abandons_in_flight_requests(
    tmp_path: Path, servers: Servers
) -> None:
    _, url = servers.start()
    proc, out = start_loadgen(
        tmp_path, "--url", url, "--rate", "50", "--slow-every", "1", "--slow-ms", "20000"
    )
    wait_for_start(proc)
    time.sleep(1.0)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    result = finish(proc, out, timeout=15)

    assert result["stopped_by"] == "signal SIGINT"
    assert result["failed"] == result["sent"] > 0
    assert result["failures_by_reason"] == {"abandoned": result["sent"]}
    assert result["drain_s"] < 5


def test_slow_responses_beyond_the_budget_are_timeouts(tmp_path: Path, servers: Servers) -> None:
    _, url = servers.start()
    result = run_loadgen(
        tmp_path, "--url", url, "--duration", "0.5", "--rate", "10", "--path", "/slow?ms=3000",
        "--timeout", "0.5",
    )  # fmt: skip

    assert result["failures_by_reason"] == {"timeout": 5}
    assert all(400 <= r["latency_ms"] <= 1500 for r in result["records"])


def test_concurrency_cap_counts_overload(tmp_path: Path, servers: Servers) -> None:
    _, url = servers.start()
    result = run_loadgen(
        tmp_path, "--url", url, "--duration", "1", "--rate", "50", "--slow-every", "1",
        "--slow-ms", "600", "--max-inflight", "5",
    )  # fmt: skip

    assert result["failures_by_reason"].get("overload", 0) > 10
    assert result["ok"] >= 5


def test_two_urls_share_the_load_round_robin(tmp_path: Path, servers: Servers) -> None:
    _, url_a = servers.start("--version", "a")
    _, url_b = servers.start("--version", "b")
    result = run_loadgen(
        tmp_path, "--url", url_a, "--url", url_b, "--duration", "1", "--rate", "100",
        "--slow-every", "4", "--slow-ms", "100",
    )  # fmt: skip

    assert result["failed"] == 0, result["failure_examples"]
    assert result["per_url"] == {
        url_a: {"sent": 50, "ok": 50, "failed": 0},
        url_b: {"sent": 50, "ok": 50, "failed": 0},
    }
    assert result["version_counts"] == {"a": 50, "b": 50}
    slow_urls = {r["url"] for r in result["records"] if r["slow"]}
    assert slow_urls == {url_a, url_b}


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl CLI")
def test_https_with_self_signed_certificate(tmp_path: Path, servers: Servers) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )  # fmt: skip
    _, url = servers.start("--tls", str(cert), str(key))

    result = run_loadgen(tmp_path, "--url", url, "--duration", "1", "--rate", "50", "--insecure")
    assert result["failed"] == 0, result["failure_examples"]
    assert result["version_counts"] == {"v1": 50}

    result = run_loadgen(tmp_path, "--url", url, "--duration", "0.2", "--rate", "20")
    assert result["failed"] == result["sent"] > 0
    assert set(result["failures_by_reason"]) == {"SSLCertVerificationError"}


def test_importing_the_module_does_not_load_gevent() -> None:
    code = "import sys, bench.loadgen; assert 'gevent' not in sys.modules, 'gevent loaded'"
    subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, env=_env(), check=True)


def test_bad_arguments_exit_2(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "bench.loadgen", "--url", "ftp://127.0.0.1", "--duration", "1"],
        cwd=REPO_ROOT,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 2
    assert "unsupported url" in proc.stderr
