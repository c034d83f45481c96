"""Configuration files that are validated on the host before they replace the live one."""

from __future__ import annotations

import hashlib
import posixpath
import shlex
from collections.abc import Callable
from io import StringIO

from jinja2 import Environment, FileSystemLoader, StrictUndefined
from pyinfra import host, logger, state
from pyinfra.api import FileUploadCommand, QuoteString, StringCommand, operation
from pyinfra.facts.files import File, FileContents, Sha1File
from pyinfra.operations.util.files import generate_color_diff

from ..paths import TEMPLATES_DIR

# A rendered file is staged beside its destination, so the final `mv` is an atomic
# rename on the same file system and a failed validation leaves the live file alone.
STAGING_SUFFIX = ".deploykit-new"
MASK = "********"
# A secret the live file holds but the new one does not: the diff shows it changed.
OLD_MASK = "********(old)"
# Where uploads wait before sudo copies them into place: only the SSH user can read it.
# Its own folder under /var/lib (root-owned: nobody else can create it first), apart
# from /var/lib/deploykit, whose owner differs by role (deploy on app hosts, root on lb).
UPLOAD_DIR = "/var/lib/deploykit-upload"


def render_template(name: str, **data) -> str:
    """Render templates/<name> with StrictUndefined: a missing variable is an error."""
    environment = Environment(
        loader=FileSystemLoader(str(TEMPLATES_DIR)),
        undefined=StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    return environment.get_template(name).render(**data)


def mask_secrets(text: str, secrets: list[str], mask: str = MASK) -> str:
    for secret in sorted((s for s in secrets if s), key=len, reverse=True):
        text = text.replace(secret, mask)
    return text


def _octal(mode: int | str | None) -> str | None:
    if mode is None:
        return None
    return str(mode) if isinstance(mode, str) else format(mode, "o")


@operation()
def config_file(
    content: str,
    dest: str,
    validate: str | None = None,
    mode: int | str = 0o644,
    user: str = "root",
    group: str = "root",
    secrets: list[str] | None = None,
    old_secrets: Callable[[str], list[str]] | None = None,
):
    """
    Install a configuration file only if it differs and passes validation.

    + content: the full text of the file
    + dest: the path on the host
    + validate: a command checking the staged file; ``{path}`` stands for its path
    + mode: octal permissions of the installed file
    + user: owner of the file
    + group: group of the file
    + secrets: values never printed by ``--diff``; they show as ********
    + old_secrets: given the live file's text, the secrets it holds, so that a secret
      being replaced is not printed either; it shows as ********(old)

    **Example:**

    .. code:: python

        config_file(
            name="Ensure HAProxy's configuration is current and valid",
            content=render_template("haproxy.cfg.j2", servers=servers),
            dest="/etc/haproxy/haproxy.cfg",
            validate="haproxy -c -f {path}",
        )
    """
    mode_text = _octal(mode)
    remote = host.get_fact(File, path=dest)
    wanted_sha1 = hashlib.sha1(content.encode()).hexdigest()
    same_content = bool(remote) and host.get_fact(Sha1File, path=dest) == wanted_sha1

    if same_content:
        fixes = []
        # The File fact gives the mode as the int of its octal digits: 0o640 reads 640.
        if mode_text and str(remote["mode"]) != mode_text.lstrip("0"):
            fixes.append(StringCommand("chmod", mode_text, QuoteString(dest)))
        if (user and remote["user"] != user) or (group and remote["group"] != group):
            fixes.append(StringCommand("chown", f"{user}:{group}", QuoteString(dest)))
        if not fixes:
            host.noop(f"{dest} is up to date")
            return
        yield from fixes
        return

    if state.config.DIFF:
        current = host.get_fact(FileContents, path=dest) if remote else None
        current_lines = [line + "\n" for line in current or []]
        host.log(f"Will {'modify' if remote else 'create'} {dest}", logger.info)
        masked = mask_secrets(content, secrets or [])
        # New secrets first: a line whose secret is unchanged masks the same on both sides.
        replaced = old_secrets("".join(current_lines)) if old_secrets and current_lines else []
        current_masked = [
            mask_secrets(mask_secrets(line, secrets or []), replaced, OLD_MASK)
            for line in current_lines
        ]
        for line in generate_color_diff(current_masked, masked.splitlines(keepends=True)):
            logger.info("  %s", line)
        logger.info("")

    staged = dest + STAGING_SUFFIX
    yield StringCommand("mkdir", "-p", QuoteString(posixpath.dirname(dest)))
    # The staged file gets its final owner and mode while still empty: the upload's `cp`
    # writes into it and keeps them, so its content is never readable by others.
    yield StringCommand(
        "install",
        "-m",
        mode_text or "644",
        "-o",
        user,
        "-g",
        group,
        "/dev/null",
        QuoteString(staged),
    )
    yield from private_upload(content, staged)
    if validate:
        yield validation_command(validate, staged)
    yield StringCommand("mv", "-f", QuoteString(staged), QuoteString(dest))


def private_upload(content: str, dest: str) -> list:
    """Commands uploading `content` onto `dest` (which should already exist with its
    final mode: the copy keeps it).

    With sudo, pyinfra uploads to a temporary file first, by default in /tmp with the
    SFTP server's umask (world-readable) until copied: this one waits in UPLOAD_DIR.
    """
    ssh_user = host.data.get("ssh_user") or "root"
    upload_name = hashlib.sha1(f"{dest}\0{content}".encode()).hexdigest()
    return [
        StringCommand("install", "-d", "-m", "0700", "-o", ssh_user, UPLOAD_DIR),
        FileUploadCommand(
            StringIO(content), dest, remote_temp_filename=f"{UPLOAD_DIR}/{upload_name}"
        ),
    ]


def validation_command(validate: str, staged: str) -> StringCommand:
    """Run the check; on failure drop the staged file and fail, naming the live file."""
    live = staged[: -len(STAGING_SUFFIX)]
    check = validate.replace("{path}", shlex.quote(staged))
    message = shlex.quote(f"deploykit: {live} failed validation; the live file is unchanged")
    cleanup = f"status=$?; rm -f {shlex.quote(staged)}; echo {message} >&2; exit $status"
    return StringCommand(f"{check} || {{ {cleanup}; }}")
