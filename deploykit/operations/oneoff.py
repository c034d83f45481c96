"""Commands run once, in a throwaway container of the app image (migrations, reindexes)."""

from __future__ import annotations

import shlex

from pyinfra import host, logger
from pyinfra.api import FunctionCommand, StringCommand, operation

from ..commands.oneoff import parse_exit_status, report_exit_status, run_throwaway
from ..rollout.lock import report_outcome


def run_and_report(state, host, script: str, what: str, on_failure: str) -> bool:
    """Run the one-off with its output streamed, then say how it ended.

    A callback rather than a plain command: pyinfra prints a command's output only when
    it fails or with -vvv, and a migration's output matters either way.
    """
    # pyinfra passes (state, host) to callbacks whose first parameters bear those names.
    # No sudo: the deploy user is in the docker group and owns the env file.
    ok, output = host.run_shell_command(
        StringCommand(report_exit_status(script)), print_output=True, _sudo=False
    )
    if ok:
        host.log_styled(f"{what} succeeded", fg="green", log_func=logger.info)
        report_outcome(result="succeeded")
        return True
    status = parse_exit_status(output.stdout)
    ending = f"exit status {status}" if status is not None else "it never finished"
    report_outcome(result="failed", reason=f"{what} failed ({ending})")
    host.log_styled(
        f"deploykit: {what} FAILED ({ending}){'; ' + on_failure if on_failure else ''}",
        fg="red",
        log_func=logger.error,
    )
    return False


@operation(is_idempotent=False)
def oneoff_container(
    command: list[str],
    image: str,
    network: str,
    env_file: str,
    what: str = "one-off command",
    on_failure: str = "",
):
    """
    Run a command once in a throwaway container of the app image; fail with its status.

    + command: the argv to run in the container
    + image: the app image with its tag, such as ``registry:5000/deploykit/app:v2``
    + network: the app's Docker network (the container reaches what the app reaches)
    + env_file: the app's env file on the host: the container gets the app's environment
    + what: how messages name the command ("release command")
    + on_failure: a sentence added to the failure message (what did not happen)

    **Example:**

    .. code:: python

        oneoff_container(
            name="Run the migrations once with app:v2",
            command=["python3", "/app/manage.py", "migrate"],
            image="registry:5000/deploykit/app:v2",
            network="deploykit-app",
            env_file="/etc/deploykit/app.env",
        )
    """
    script = run_throwaway(image, command, network=network, env_file=env_file)
    described = f"{what} `{shlex.join(command)}` on {host.name} with {image}"
    yield FunctionCommand(run_and_report, (script, described, on_failure), {})
