"""Docker command lines for one-off commands and consoles: throwaway containers of the
app image, with the app's env file and network. Pure.

The environment comes only from the env file: nothing secret is on the command line.
"""

from __future__ import annotations

from dataclasses import dataclass

from .containers import LABEL_PREFIX, running_versions
from .images import Version
from .shell import q
from .workers import WORKER_ROLE

# One-off containers carry this label (not ROLE_LABEL: the roll reads every container
# with a role as part of a release), so `docker ps --filter label=...` finds a stray one.
ONEOFF_LABEL = f"{LABEL_PREFIX}.oneoff"
# The line a one-off script prints last, with the command's exit status.
ONEOFF_EXIT_MARKER = "deploykit: one-off exited with status "


@dataclass(frozen=True)
class RunningTagImage:
    """The app image the host runs when the script runs, by digest when pinned: for a
    script that starts with `resolve_running_tag`, which sets $reference."""

    repository: str

    def word(self) -> str:
        return f'{q(self.repository)}"$reference"'


def resolve_running_tag(missing: str) -> str:
    """Shell that sets $version to the version the host runs (TAG@DIGEST, or TAG when
    unpinned: its app container's, else its workers'), $tag to its tag and $reference to
    what follows the repository in its image (@DIGEST, or :TAG); or prints `missing`
    and exits 1 when neither runs."""
    return (
        f"version=$({running_versions()} 2>/dev/null | tail -n 1); "
        f'[ -n "$version" ] || '
        f"version=$({running_versions(WORKER_ROLE)} 2>/dev/null | tail -n 1); "
        f'if [ -z "$version" ]; then echo {q(missing)} >&2; exit 1; fi; '
        "tag=${version%%@*}; "
        'case $version in *@*) reference="@${version#*@}" ;; *) reference=":$tag" ;; esac; '
    )


def run_throwaway(
    image: str | RunningTagImage,
    command: list[str],
    *,
    network: str,
    env_file: str,
    purpose: str = "oneoff",
    flags: list[str] | None = None,
) -> str:
    """A throwaway container of the app image running `command` (an argv, each word
    quoted) with the app's env file and network; removed when it exits. `flags` are
    further `docker run` options, already quoted (a scheduled job's --name)."""
    word = image.word() if isinstance(image, RunningTagImage) else q(image)
    return _run_removed(word, command, network, env_file, purpose, list(flags or []))


def _run_removed(
    image_word: str,
    command: list[str],
    network: str,
    env_file: str,
    purpose: str,
    flags: list[str],
) -> str:
    parts = ["docker run --rm", *flags]
    parts += [
        f"--env-file {q(env_file)}",
        f"--network {q(network)}",
        f"--label {q(f'{ONEOFF_LABEL}={purpose}')}",
        image_word,
    ]
    parts.extend(q(arg) for arg in command)
    return " ".join(parts)


def report_exit_status(command: str) -> str:
    """Run `command`, then print its exit status on a last line of its own and exit with
    it (pyinfra's connector reports success or failure only)."""
    return f'{command}; status=$?; echo "{ONEOFF_EXIT_MARKER}$status"; exit $status'


def parse_exit_status(output: str) -> int | None:
    """The status `report_exit_status` printed, or None if the script never got there."""
    lines = [line for line in output.splitlines() if line.startswith(ONEOFF_EXIT_MARKER)]
    if not lines:
        return None
    return int(lines[-1].removeprefix(ONEOFF_EXIT_MARKER).strip())


def console(
    image_repository: str,
    command: list[str],
    *,
    network: str,
    env_file: str,
    tag: str | None = None,
    tty: bool = True,
) -> str:
    """The remote script of `bin/console`: a container of the tag the host runs (or
    `tag`), attached to the caller's terminal; `exec` so the container gets the signals."""
    if tag:
        # A tag, or a version TAG@DIGEST (what the host was read to run).
        resolve = ""
        image = q(Version.parse(tag).image(image_repository))
    else:
        # A web host runs the app; a job host runs workers of the same image.
        resolve = resolve_running_tag(
            "deploykit: no app or worker container runs on this host; give --tag TAG"
        )
        image = RunningTagImage(image_repository).word()
    flags = ["--interactive", "--tty"] if tty else ["--interactive"]
    return f"{resolve}exec {_run_removed(image, command, network, env_file, 'console', flags)}"
