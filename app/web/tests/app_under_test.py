"""The example app's modules, loaded by path (app/web is an image build context, not a
package), and a WSGI request helper. The tests run from app/web/tests on a developer's
machine and from /app/tests inside the built image: the code is always one folder up."""

from __future__ import annotations

import importlib.util
from pathlib import Path

APP_DIR = Path(__file__).resolve().parent.parent


def load_module(file_name: str, module_name: str):
    """A fresh module from APP_DIR/file_name (module-level state starts anew)."""
    spec = importlib.util.spec_from_file_location(module_name, APP_DIR / file_name)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def call(app, path: str, method: str = "GET", query: str = ""):
    """Run one request through a WSGI callable; return (status code, headers, body)."""
    captured: dict = {}

    def start_response(status, headers, exc_info=None):
        captured["status"] = status
        captured["headers"] = headers

    environ = {
        "REQUEST_METHOD": method,
        "PATH_INFO": path,
        "QUERY_STRING": query,
        "SERVER_NAME": "test",
        "SERVER_PORT": "8000",
        "wsgi.url_scheme": "http",
    }
    body = b"".join(app(environ, start_response)).decode("utf-8")
    code = int(captured["status"].split(" ", 1)[0])
    return code, dict(captured["headers"]), body
