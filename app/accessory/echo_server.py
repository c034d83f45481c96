"""A stand-in accessory for the sandbox: serves the files of its data volume over HTTP
(stdlib only), so tests can see the volume's content from another host."""

import functools
import http.server
import os
import signal
import sys

DATA_DIR = os.environ.get("ECHO_DATA_DIR", "/data")
PORT = int(os.environ.get("ECHO_PORT", "9200"))


def main() -> None:
    # PID 1 ignores SIGTERM unless it handles it: stop promptly on `docker stop`.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=DATA_DIR)
    http.server.ThreadingHTTPServer(("0.0.0.0", PORT), handler).serve_forever()


if __name__ == "__main__":
    main()
