"""A small TLS syslog receiver, the sandbox's stand-in for a hosted log service: it
accepts RFC 5425 syslog over TLS (octet-counted frames, or one message per line) and
appends every message to a file, one per line. Standard library only: it runs in a
container of the sandbox's base image.

    python3 syslog_receiver.py CERTIFICATE KEY OUTPUT [PORT]
"""

from __future__ import annotations

import asyncio
import ssl
import sys


async def read_messages(reader: asyncio.StreamReader):
    """Each message of the stream: `LENGTH SP MESSAGE` frames, else lines."""
    while True:
        first = await reader.read(1)
        if not first:
            return
        if first.isdigit():
            digits = first + await reader.readuntil(b" ")
            yield await reader.readexactly(int(digits[:-1]))
        else:
            yield (first + await reader.readline()).rstrip(b"\n")


def serve(certificate: str, key: str, output: str, port: int) -> None:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certificate, key)

    async def handle(reader, writer):
        try:
            with open(output, "ab") as received:
                async for message in read_messages(reader):
                    received.write(message.replace(b"\n", b" ") + b"\n")
                    received.flush()
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError, ValueError):
            pass
        finally:
            writer.close()

    async def main():
        server = await asyncio.start_server(handle, "0.0.0.0", port, ssl=context)
        print(f"syslog receiver: listening on {port}", flush=True)
        async with server:
            await server.serve_forever()

    asyncio.run(main())


if __name__ == "__main__":
    serve(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]) if len(sys.argv) > 4 else 6514)
