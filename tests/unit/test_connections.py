"""reconnect(): a new SSH session, and no SFTP client left bound to the closed one."""

from types import SimpleNamespace

from pyinfra.connectors.ssh import SSHConnector

from deploykit.connections import reconnect


class FakeClient:
    def __init__(self):
        self.closed = False

    def close(self):
        self.closed = True


def test_reconnect_closes_the_session_and_forgets_the_memoized_sftp_client(monkeypatch):
    connector = SSHConnector.__new__(SSHConnector)
    other = SSHConnector.__new__(SSHConnector)
    old_client = FakeClient()
    connector.client = old_client
    connects = []
    monkeypatch.setattr(SSHConnector, "connect", lambda self: connects.append(self))
    monkeypatch.setattr(
        SSHConnector.get_file_transfer_connection,
        "cache",
        {f"{(connector,)}{{}}": "stale sftp", f"{(other,)}{{}}": "other host's sftp"},
    )
    host = SimpleNamespace(connector=connector, connected=False)

    reconnect(host)

    cache = SSHConnector.get_file_transfer_connection.cache
    assert old_client.closed and connects == [connector] and host.connected
    assert cache == {f"{(other,)}{{}}": "other host's sftp"}
