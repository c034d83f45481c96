"""Group membership that takes effect within the same pyinfra run."""

from __future__ import annotations

from pyinfra import host
from pyinfra.api import FunctionCommand, QuoteString, StringCommand, operation
from pyinfra.api.exceptions import OperationError
from pyinfra.facts.server import Users

from ..connections import reconnect


def reopen_ssh_session(state, host, user: str, probe: str | None) -> bool:
    """Close the SSH connection and open a new one, then run ``probe`` without sudo.

    Supplementary groups are fixed when sshd starts a session: a user added to a group
    only gains it in a NEW session. pyinfra keeps one connection per host for the whole
    run, so without this the user's next commands still lack the group and a second
    run is needed (the trap of the 2015 write-up this kit replaces).
    """
    # pyinfra passes (state, host) to callbacks whose first parameters bear those names.
    reconnect(host)
    if probe is None:
        return True
    ok, output = host.run_shell_command(StringCommand(probe), _sudo=False)
    if not ok:
        raise OperationError(
            f"{user} still cannot run `{probe}` after reconnecting: {output.stderr}"
        )
    return True


@operation()
def group_member(user: str, group: str, probe: str | None = None):
    """
    Add a user to a group, effective for the rest of this run.

    + user: the account
    + group: the supplementary group to add (it must exist)
    + probe: a command the user must be able to run, without sudo, once in the group

    **Example:**

    .. code:: python

        group_member(
            name="Ensure deploy can use Docker without sudo",
            user="deploy",
            group="docker",
            probe="docker info --format '{{.ServerVersion}}'",
        )
    """
    users = host.get_fact(Users)
    if user not in users:
        raise OperationError(f"user {user!r} does not exist; run deploys/bootstrap.py first")
    if group in users[user]["groups"] or users[user]["group"] == group:
        host.noop(f"{user} is in group {group}")
        return
    yield StringCommand("usermod", "--append", "--groups", QuoteString(group), QuoteString(user))
    # Only the connecting user's session needs renewing; others log in fresh anyway.
    if host.data.get("ssh_user") == user:
        yield FunctionCommand(reopen_ssh_session, (user, probe), {})
