"""The settings schema: every knob's default and type, and the checks run before any host
is touched (unknown keys, wrong types, missing groups). The knobs are declared once, in
the DEFAULTS of their component, read as data by declarations.py.

A typo in a knob is an error, not a silent default: ``docker_log_max_sizee`` in
``group_data/all.py`` stops the deploy and names the key, the file and the closest
known key.
"""

from __future__ import annotations

import ast
import difflib
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from .command_line import inventory_file
from .declarations import all_declarations
from .paths import GROUP_DATA_DIR, REPO_ROOT

# Keys read by pyinfra's connectors, or describing the host itself.
HOST_KEYS = {
    "private_ip",
    "ssh_hostname",
    "ssh_port",
    "ssh_user",
    "ssh_password",
    "ssh_key",
    "ssh_key_password",
    "ssh_allow_agent",
    "ssh_look_for_keys",
    "ssh_forward_agent",
    "ssh_config_file",
    "ssh_known_hosts_file",
    "ssh_strict_host_key_checking",
    "ssh_paramiko_connect_kwargs",
    "ssh_connect_retries",
    "ssh_connect_retry_min_delay",
    "ssh_connect_retry_max_delay",
    "ssh_file_transfer_protocol",
}

# Knobs that take more than one type.
ALLOWED_TYPES: dict[str, tuple[type, ...]] = {
    "rollout_batch_size": (int, str),
    # A command: a string split into words as a shell would, or the list of words.
    "oneoff_command": (str, list),
    "rollout_release_command": (str, list),
    "only": (str, list),
}


class ConfigError(Exception):
    """Bad input, found before any host is changed."""


@dataclass
class Schema:
    defaults: dict[str, object] = field(default_factory=dict)

    @classmethod
    def build(cls) -> "Schema":
        defaults: dict[str, object] = {}
        for declarations in all_declarations():
            defaults.update(declarations.defaults())
        return cls(defaults)

    def is_known(self, key: str) -> bool:
        # Leading underscore: pyinfra's global arguments set as data, such as _sudo.
        return key.startswith("_") or key in HOST_KEYS or key in self.defaults

    def suggestion(self, key: str) -> str:
        close = difflib.get_close_matches(key, [*self.defaults, *HOST_KEYS], n=1)
        return f" (did you mean {close[0]!r}?)" if close else ""

    def type_error(self, key: str, value: object) -> str | None:
        default = self.defaults.get(key)
        if default is None or key not in self.defaults:
            return None
        expected = ALLOWED_TYPES.get(key) or (type(default),)
        if float in expected:
            expected = (*expected, int)  # 30 is a fine number of seconds
        # bool is an int in Python: keep the two apart, a knob is one or the other.
        if isinstance(value, bool) != isinstance(default, bool) or not isinstance(value, expected):
            names = " or ".join(t.__name__ for t in ALLOWED_TYPES.get(key) or (type(default),))
            return f"{key} must be {names}, got {type(value).__name__} {value!r}"
        return None


ALL_DEFAULTS = Schema.build().defaults


def knob(data, key: str):
    """A setting as a host sees it: its data, else the documented default. For code that
    runs outside the component's @deploy (whose data_defaults apply only inside it)."""
    value = data.get(key)
    if value is None:
        return ALL_DEFAULTS[key]
    return value


def group_data_keys(path: Path) -> dict[str, int]:
    """Top-level names a group_data file defines, with their line numbers.

    Read from the syntax tree, not by running the file: a broken file is reported as
    such, with its line, instead of as a traceback from the middle of pyinfra.
    """
    try:
        tree = ast.parse(path.read_text(), filename=str(path))
    except SyntaxError as error:
        raise ConfigError(f"{_relative(path)}:{error.lineno}: {error.msg}") from None
    keys: dict[str, int] = {}
    for node in tree.body:
        targets = []
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, ast.AnnAssign):
            targets = [node.target]
        for target in targets:
            if isinstance(target, ast.Name):
                keys[target.id] = node.lineno
    return keys


def check_group_data(schema: Schema, folder: Path = GROUP_DATA_DIR) -> list[str]:
    errors = []
    for path in sorted(folder.glob("*.py")):
        for key, line in group_data_keys(path).items():
            if not schema.is_known(key):
                errors.append(
                    f"{_relative(path)}:{line}: unknown key {key!r}{schema.suggestion(key)}"
                )
    return errors


def check_values(schema: Schema, hosts) -> list[str]:
    """Types of the values each host really sees, after group and host merging."""
    errors = []
    for host in hosts:
        for key in schema.defaults:
            value = host.data.get(key)
            if value is None:
                continue
            problem = schema.type_error(key, value)
            if problem:
                errors.append(f"host {host.name}: {problem}")
    return sorted(set(errors))


def check_overrides(schema: Schema, overrides: dict) -> list[str]:
    return [
        f"--data {key}: unknown key{schema.suggestion(key)}"
        for key in overrides
        if not schema.is_known(key)
    ]


def check_groups(inventory, required: tuple[str, ...]) -> list[str]:
    errors = []
    for group in required:
        members = inventory.get_group(group, default=None)
        if not members:
            # pyinfra drops empty groups while loading: empty and missing look alike.
            where = inventory_file() or "the inventory"
            errors.append(f"{where}: no hosts in group {group!r}; this deploy needs it")
    return errors


def group_data_folders() -> list[Path]:
    """The folders pyinfra's CLI reads group data from: ./group_data, then the
    inventory's own group_data folder."""
    folders = [Path.cwd() / "group_data"]
    inventory = inventory_file()
    if inventory:
        folders.append(Path(inventory).resolve().parent / "group_data")
    unique = []
    for folder in folders:
        if folder.resolve() not in [f.resolve() for f in unique] and folder.is_dir():
            unique.append(folder)
    return unique or [GROUP_DATA_DIR]


def _relative(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


def command_words(value, setting: str) -> tuple[list[str], str | None]:
    """A command setting given as a string (split as a shell would, no shell features)
    or as a list of words; (argv, problem)."""
    if isinstance(value, (list, tuple)):
        words = [str(word) for word in value]
    elif isinstance(value, str):
        try:
            words = shlex.split(value)
        except ValueError as error:
            return [], f"{setting}: cannot split {value!r} into words: {error}"
    elif value is None:
        words = []
    else:
        return [], f"{setting} must be a string or a list of words, got {value!r}"
    if not words:
        return [], f"{setting} is empty: give the command to run, e.g. --data {setting}='...'"
    return words, None
