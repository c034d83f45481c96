"""Reopening a host's SSH connection in the middle of a pyinfra run."""

from __future__ import annotations


def reconnect(host) -> None:
    """Close the host's SSH connection and open a new one (a new sshd session).

    pyinfra's SSH connector memoizes its SFTP client per connector: after a reconnect
    that client still points at the closed transport, and the next file upload fails
    with "Socket is closed". It is dropped here, so the next upload opens a new one.
    """
    connector = host.connector
    client = getattr(connector, "client", None)
    if client is not None:
        client.close()
    cached = getattr(type(connector).get_file_transfer_connection, "cache", None)
    if cached is not None:
        # pyinfra.api.util.memoize keys its cache by the call's repr: "(connector,){}".
        for key in [key for key in cached if key.startswith(f"({connector!r},)")]:
            del cached[key]
    connector.connect()
    host.connected = True
