"""One-off commands (migrate, reindex, a data fix): which host, which image, which
command, decided and checked once while planning, before any host is touched.

The command runs in a throwaway container of the app image on ONE host, with the
app's env file and network, so it sees exactly what the app sees. The tag is the one
that host runs (its app container, or on a job host its workers), or --data image_tag.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass

from pyinfra import host, inventory, state

from ..config import command_words, knob
from ..errors import refuse
from ..commands.images import Version
from ..facts import RunningAppVersion, RunningWorkerVersion
from ..operations.oneoff import oneoff_container
from ..preflight import hosts_in_run, once_per_run
from .lock import take_deploy_lock
from .plan import PlanError, check_tag

# Groups whose hosts run the app image, with its env file and network.
APP_GROUPS = ("web", "job")


@dataclass(frozen=True)
class OneoffRequest:
    host: str
    image: str
    command: list[str]
    network: str
    env_file: str


def oneoff_request(command=None) -> OneoffRequest:
    """The one-off of this run: `command` (default: --data oneoff_command)."""
    return once_per_run("oneoff", lambda: _plan_oneoff(command))


def _plan_oneoff(command) -> OneoffRequest:
    web_hosts = hosts_in_run("web")
    # --data (or group_data all.py) sets it for every host: read it from any one.
    target_name = next(iter(inventory)).data.get("oneoff_host")
    if not target_name:
        if not web_hosts:
            refuse(["no web host in this run (--limit?): name one with --data oneoff_host=HOST"])
        target_name = web_hosts[0].name
    target = inventory.get_host(target_name, default=None)
    if target is None:
        refuse([f"oneoff_host {target_name!r} is not a host of this inventory"])
    if not set(APP_GROUPS) & set(target.groups):
        refuse(
            [
                f"oneoff_host {target_name!r} is in neither group web nor job: one-off "
                "commands run where the app runs, with its env file and network"
            ]
        )
    if not state.is_host_in_limit(target):
        refuse([f"oneoff_host {target_name!r} is outside --limit"])

    data = target.data
    errors = []
    if command is None:
        command = data.get("oneoff_command")
    words, problem = command_words(command, "oneoff_command")
    if problem:
        errors.append(problem)
    if not data.get("app_image"):
        errors.append("app_image is not set (group_data)")
    tag = data.get("image_tag") or None
    version = None
    if tag:
        try:
            version = Version(check_tag(tag))
        except PlanError as error:
            errors.append(str(error))
    elif not errors:
        # A web host runs the app, a job host workers of the same image: exactly the
        # digest they run, not whatever their tag points to now.
        version = target.get_fact(RunningAppVersion) or target.get_fact(RunningWorkerVersion)
        if version is None:
            errors.append(
                f"{target_name} runs no app or worker container, so there is no tag to run: "
                "give one with --data image_tag=TAG"
            )
    if errors:
        refuse(errors)
    take_deploy_lock("oneoff", version.short, [target_name], command=words)
    return OneoffRequest(
        host=target_name,
        image=version.image(data.app_image),
        command=words,
        network=knob(data, "app_network"),
        env_file=knob(data, "app_env_file"),
    )


def run_oneoff(command=None, what: str = "one-off command") -> None:
    """A one-off deploy file's whole body: plan the one-off once (`command`, default
    --data oneoff_command), then run it on its one host."""
    request = oneoff_request(command)
    if host.name == request.host:
        oneoff_container(
            name=f"Run `{shlex.join(request.command)}` ({what}) once with {request.image}",
            command=request.command,
            image=request.image,
            network=request.network,
            env_file=request.env_file,
            what=what,
        )
