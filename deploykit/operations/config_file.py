"""Configuration files that are validated on the host before they replace the live one."""

from __future__ import annotations

import hashlib
import posixpath
import re
import secrets as random
import shlex
from collections.abc import Callable
from io import StringIO

from jinja2 import Environment, FileSystemLoader, StrictUndefined
from pyinfra import host, logger, state
from pyinfra.api import FileUploadCommand, QuoteString, StringCommand, operation
from pyinfra.facts.files import File, FileContents, Sha1File
from pyinfra.operations.util.files import generate_color_diff

from ..facts import get_secret_fact
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


# A PEM private key, whatever its kind (RSA, EC, ENCRYPTED...): masked whole in a diff,
# every one, in every file.
PRIVATE_KEY_BLOCK = re.compile(
    r"-----BEGIN ([A-Z0-9 ]*)PRIVATE KEY-----.*?-----END \1PRIVATE KEY-----", re.S
)
# The name part of a setting line ("NAME=", "requirepass ", "key: "), kept when the
# value of a removed line of a secret-bearing file is masked.
SETTING_NAME = re.compile(r"\s*[A-Za-z_][\w.-]*(\s*[=:]\s*|\s+)(?=\S)")


def mask_secrets(text: str, secrets: list[str], mask: str = MASK) -> str:
    for secret in sorted((s for s in secrets if s), key=len, reverse=True):
        text = text.replace(secret, mask)
    return text


def mask_private_keys(text: str, keep: str = "") -> str:
    """Each PEM private key block as one masked line between its BEGIN and END lines:
    MASK when `keep` (the new content) holds the same key, else OLD_MASK."""

    def masked(match: re.Match) -> str:
        kind = match.group(1)
        mask = MASK if keep and match.group(0) in keep else OLD_MASK
        return f"-----BEGIN {kind}PRIVATE KEY-----\n{mask}\n-----END {kind}PRIVATE KEY-----"

    return PRIVATE_KEY_BLOCK.sub(masked, text)


def masked_diff_sides(
    current: str, content: str, secrets: list[str], replaced: list[str]
) -> tuple[list[str], list[str]]:
    """The live file's lines and the new file's lines as --diff may show them.

    Private keys are masked whole on both sides, then every secret of the new file
    (MASK), then the secrets the live file holds (`replaced`, OLD_MASK). In a file that
    holds secrets, a live line the new file no longer has keeps only its setting's name
    ("NAME=********(old)"): a secret whose place moved or whose name went is not
    printed either."""
    new = mask_secrets(mask_private_keys(content, keep=content), secrets)
    old = mask_secrets(mask_private_keys(current, keep=content), secrets)
    old = mask_secrets(old, replaced, OLD_MASK)
    new_lines = new.splitlines(keepends=True)
    old_lines = old.splitlines(keepends=True)
    if secrets or PRIVATE_KEY_BLOCK.search(current + content):
        kept = set(new_lines)
        old_lines = [
            line if _shown_as_is(line, kept) else _value_masked(line) for line in old_lines
        ]
    return old_lines, new_lines


def _shown_as_is(line: str, new_lines: set[str]) -> bool:
    """A live line that is unchanged, masked already, blank, or a PEM BEGIN/END line."""
    return line in new_lines or MASK in line or not line.strip() or line.startswith("-----")


def _value_masked(line: str) -> str:
    name = SETTING_NAME.match(line)
    return (name.group(0) if name else "") + OLD_MASK + "\n"


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
        # Its output is the live file, secrets and all: never printed, even at -vvv.
        current_lines = get_secret_fact(host, FileContents, path=dest) if remote else None
        current = "".join(line + "\n" for line in current_lines or [])
        host.log(f"Will {'modify' if remote else 'create'} {dest}", logger.info)
        replaced = old_secrets(current) if old_secrets and current else []
        old_lines, new_lines = masked_diff_sides(current, content, secrets or [], replaced)
        for line in generate_color_diff(old_lines, new_lines):
            logger.info("  %s", line)
        logger.info("")

    staged = dest + STAGING_SUFFIX
    # Missing folders are made world-traversable whatever the session's umask: hardening
    # sets a login UMASK of 027, which sudo keeps, and a root-only folder would hide the
    # file from the service that reads it (PostgreSQL's certificate did). A folder that
    # must be private is declared by its component, with its owner and mode.
    yield StringCommand(
        "umask", "022", "&&", "mkdir", "-p", QuoteString(posixpath.dirname(dest))
    )
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
    # Random, not derived from the content: the name lands in sudo's log (the `cp`),
    # forwarded to the log host, and a digest of a secret file would let anyone who
    # reads it test guesses of the secret.
    upload_name = f"upload-{random.token_hex(16)}"
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
