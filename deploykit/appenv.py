"""The app's environment: one env file per host, composed from settings and secrets,
interpolated, and checked against what the app declares it needs.

Twelve-factor: every host runs the same image, and environments differ only by this
file. It is composed, on the machine running pyinfra, from

+ ``app_env`` (group_data): plain settings, whose values may refer to other variables
  as ``${NAME}`` or ``${NAME:-default}`` (the default when NAME is unset or empty;
  literal text without ``}``), with ``$$`` for a literal ``$``;
+ the secrets file (``app_secrets_file``, deploykit/secrets.py): taken literally, never
  interpolated, since a generated password may contain ``$``;
+ built-ins from the inventory: ``<GROUP>_HOST`` is the ``private_ip`` of the first host
  of each group (``DB_HOST``, ``JOB_HOST``...). They serve references, and land in the
  file only when the app declares them; an ``app_env`` entry of the same name wins.

The app declares every variable it reads in one YAML file (``app_env_spec``,
app/Envfile.yml): type (string, int, number, bool, url), required or not, and a description.
A variable the app does not declare, a required one that is missing or empty, a value
of the wrong type, an undefined reference and a reference cycle are all problems that
stop the deploy before any host is touched (deploykit/preflight.py).

A secret interpolated into a URL goes in verbatim: it must be URL-safe (hex, or stored
percent-encoded). Verbatim is also what lets ``--diff`` mask it inside the URL.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from urllib.parse import urlsplit

import yaml

from .config import knob
from .paths import REPO_ROOT
from .registry_access import password_secret_names
from .secrets import SecretsError, load_secrets

TYPES = ("string", "int", "number", "bool", "url")
# What the example app's flag parser accepts (app/web/webapp.py parse_flag).
BOOL_WORDS = {"1", "0", "true", "false", "yes", "no", "on", "off"}

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
# `$$`, `${NAME}`, `${NAME:-default}`, or any other `$` (an error: write `$$`).
_REFERENCE = re.compile(r"\$\$|\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::-(?P<default>[^}]*))?\}|\$")

APP_ENV = "app_env"
BUILT_IN = "built-in from the inventory"


@dataclass(frozen=True)
class Declaration:
    name: str
    type: str
    required: bool
    description: str


@dataclass
class AppEnv:
    """A host's final environment, the values to mask in diffs, and what is wrong."""

    values: dict[str, str] = field(default_factory=dict)
    # Secret values: masked wherever a diff is shown. Interpolation copies them
    # verbatim, so masking them also masks them inside DATABASE_URL and the like.
    secret_values: list[str] = field(default_factory=list)
    # Names whose value is, or was built from, a secret (masked whole in an old file).
    sensitive_names: set[str] = field(default_factory=set)
    problems: list[str] = field(default_factory=list)


class EnvfileError(Exception):
    """The Envfile is missing or malformed; the message names the file and the entry."""


def parse_envfile(text: str, source: str) -> dict[str, Declaration]:
    """The declarations of an Envfile: a mapping of NAME to {type, required, description}."""
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise EnvfileError(f"{source}: not valid YAML: {error}") from None
    if not isinstance(document, dict):
        raise EnvfileError(f"{source}: expected a mapping of variable names to declarations")
    declarations = {}
    for name, entry in document.items():
        where = f"{source}: {name}"
        if not isinstance(name, str) or not _NAME.match(name):
            raise EnvfileError(f"{where}: not a valid environment variable name")
        if not isinstance(entry, dict):
            raise EnvfileError(f"{where}: expected type, required and description")
        unknown = set(entry) - {"type", "required", "description"}
        if unknown:
            raise EnvfileError(f"{where}: unknown field(s) {', '.join(sorted(map(str, unknown)))}")
        kind = entry.get("type", "string")
        if kind not in TYPES:
            raise EnvfileError(f"{where}: type {kind!r} is not one of {', '.join(TYPES)}")
        required = entry.get("required", False)
        if not isinstance(required, bool):
            raise EnvfileError(f"{where}: required must be true or false, got {required!r}")
        description = entry.get("description")
        if not isinstance(description, str) or not description.strip():
            raise EnvfileError(f"{where}: a description is required")
        declarations[name] = Declaration(name, kind, required, description.strip())
    return declarations


@cache
def load_envfile(relative: str) -> dict[str, Declaration]:
    """The Envfile at `relative` (to the repository, or absolute); read once per run."""
    path = Path(relative) if Path(relative).is_absolute() else REPO_ROOT / relative
    if not path.is_file():
        raise EnvfileError(f"{relative}: the app's Envfile does not exist (app_env_spec)")
    return parse_envfile(path.read_text(), relative)


def inventory_builtins(groups: Mapping[str, list[str]]) -> dict[str, str]:
    """``<GROUP>_HOST`` for each group: the address of its first host, in inventory order.

    + groups: group name -> its hosts' private addresses, in inventory order
    """
    builtins = {}
    for group, addresses in groups.items():
        name = re.sub(r"[^A-Za-z0-9_]", "_", group).upper() + "_HOST"
        if addresses and _NAME.match(name):
            builtins[name] = addresses[0]
    return builtins


def plain_values(app_env: object) -> tuple[dict[str, str], list[str]]:
    """app_env as strings: numbers and booleans are written as the app reads them."""
    if not isinstance(app_env, dict):
        return {}, [f"{APP_ENV} must be a dict of NAME: value, got {type(app_env).__name__}"]
    values, problems = {}, []
    for name, value in app_env.items():
        if not isinstance(name, str) or not _NAME.match(name):
            problems.append(f"{APP_ENV}: {name!r} is not a valid environment variable name")
        elif isinstance(value, bool):
            values[name] = "true" if value else "false"
        elif isinstance(value, (str, int, float)):
            values[name] = str(value)
        else:
            problems.append(f"{APP_ENV}: {name} must be a string or a number, got {value!r}")
    return values, problems


def interpolate(
    templates: Mapping[str, str], literals: Mapping[str, str]
) -> tuple[dict[str, str], dict[str, set[str]], list[str]]:
    """Expand the references in `templates`, against themselves, then `literals`.

    Returns the expanded values; for each, the `literals` it was built from, through
    any chain of references; and the problems: undefined references, cycles, a lone $.
    """
    interpolation = _Interpolation(templates, literals)
    for name in templates:
        interpolation.resolve(name, [])
    return interpolation.done, interpolation.used, interpolation.problems


class _Interpolation:
    def __init__(self, templates: Mapping[str, str], literals: Mapping[str, str]):
        self.templates = templates
        self.literals = literals
        self.done: dict[str, str] = {}
        self.used: dict[str, set[str]] = {}
        self.failed: set[str] = set()
        self.problems: list[str] = []

    def resolve(self, name: str, stack: list[str]) -> str | None:
        """`name`'s expanded value, or None when it cannot be expanded (reported once)."""
        if name in self.done:
            return self.done[name]
        if name in self.failed:
            return None
        if name in stack:
            loop = stack[stack.index(name) :]
            self.problems.append(
                f"{APP_ENV}: {name} refers to itself: {' -> '.join([*loop, name])}"
            )
            self.failed.update(loop)
            return None
        used: set[str] = set()
        broken = False

        def expand(match: re.Match) -> str:
            nonlocal broken
            if match.group(0) == "$$":
                return "$"
            reference, default = match.group("name"), match.group("default")
            if reference is None:
                self.problems.append(
                    f"{APP_ENV}: {name} has a $ that starts no ${{NAME}}; write $$ for a literal $"
                )
                broken = True
                return ""
            if reference in self.templates:
                value = self.resolve(reference, [*stack, name])
                used.update(self.used.get(reference, ()))
            elif reference in self.literals:
                value = self.literals[reference]
                used.add(reference)
            else:
                value = None
            if value is None and reference in self.failed:
                broken = True  # already reported where it broke
                return ""
            if default is not None and not value:
                return default
            if value is None:
                close = difflib.get_close_matches(reference, [*self.templates, *self.literals], 1)
                hint = f" (did you mean {close[0]}?)" if close else ""
                self.problems.append(
                    f"{APP_ENV}: {name} refers to ${{{reference}}}, which is not defined{hint}"
                )
                broken = True
                return ""
            return value

        value = _REFERENCE.sub(expand, self.templates[name])
        if broken or name in self.failed:
            self.failed.add(name)
            return None
        self.done[name] = value
        self.used[name] = used
        return value


def compose(
    app_env: object,
    secrets: Mapping[str, str],
    builtins: Mapping[str, str],
    declarations: Mapping[str, Declaration],
    secrets_source: str = "the secrets file",
    envfile: str = "the Envfile",
) -> AppEnv:
    """A host's final environment from its settings, its secrets and the inventory."""
    plain, problems = plain_values(app_env)
    for name in sorted(set(plain) & set(secrets)):
        problems.append(f"{name} is set both in {APP_ENV} and in {secrets_source}; keep one")
    values, used, interpolation_problems = interpolate(plain, {**builtins, **secrets})
    problems += interpolation_problems
    sensitive = set(secrets) | {name for name in values if used[name] & set(secrets)}
    final = {
        **{name: value for name, value in builtins.items() if name in declarations},
        **values,
        **secrets,
    }
    sources = {name: APP_ENV for name in plain} | {name: secrets_source for name in secrets}
    problems += check(final, declarations, sources, sensitive, envfile)
    return AppEnv(
        values=final,
        secret_values=sorted({value for value in secrets.values() if value}),
        sensitive_names=sensitive,
        problems=problems,
    )


def check(
    values: Mapping[str, str],
    declarations: Mapping[str, Declaration],
    sources: Mapping[str, str],
    sensitive: set[str] = frozenset(),
    envfile: str = "the Envfile",
) -> list[str]:
    """Every value declared, of its type; every required variable set and not empty.
    Problems never quote a sensitive value."""
    problems = []
    for name, value in sorted(values.items()):
        source = sources.get(name, BUILT_IN)
        declaration = declarations.get(name)
        if declaration is None:
            problems.append(f"{name} ({source}) is not declared in {envfile}")
            continue
        if "\n" in value or "\r" in value:
            problems.append(f"{name} ({source}) spans lines, which an env file cannot hold")
            continue
        if value == "":
            continue
        problem = type_problem(declaration.type, value)
        if problem:
            shown = "a secret value" if name in sensitive else repr(value)
            problems.append(f"{name} ({source}) must be {problem}, got {shown}")
    for name, declaration in sorted(declarations.items()):
        if declaration.required and not values.get(name):
            state = "empty" if name in values else "not set"
            problems.append(f"{name} is required ({declaration.description}) but {state}")
    return problems


def type_problem(kind: str, value: str) -> str | None:
    """What `value` should have been to be of `kind`, or None when it is."""
    if kind == "int":
        return None if re.fullmatch(r"[+-]?[0-9]+", value.strip()) else "an int"
    if kind == "number":
        try:
            float(value)
        except ValueError:
            return "a number"
        return None
    if kind == "bool":
        return None if value.strip().lower() in BOOL_WORDS else "a bool (true/false, 1/0...)"
    if kind == "url":
        try:
            parts = urlsplit(value)
            parts.port  # noqa: B018  (raises on a port that is not a number)
        except ValueError:
            return "a URL"
        return None if parts.scheme and parts.netloc else "a URL (scheme://host...)"
    return None


def env_file_values(text: str) -> dict[str, str]:
    """NAME=VALUE lines of an env file as docker reads them (no quotes, no expansion)."""
    values = {}
    for line in text.splitlines():
        name, separator, value = line.partition("=")
        if separator and _NAME.match(name):
            values[name] = value
    return values


# --- pyinfra glue: a host's environment from its data and the inventory -------------


def host_app_env(host, inventory) -> AppEnv:
    """Compose and check `host`'s environment. Problems are listed, never raised."""
    data = host.data
    secrets_file = knob(data, "app_secrets_file")
    try:
        declarations = load_envfile(knob(data, "app_env_spec"))
    except EnvfileError as error:
        return AppEnv(problems=[str(error)])
    try:
        secrets = load_secrets(secrets_file)
    except SecretsError as error:
        return AppEnv(problems=[str(error)])
    # Registry passwords are the Docker engine's, never the app's (registry_access.py).
    registry_passwords = password_secret_names(data)
    secrets = {name: value for name, value in secrets.items() if name not in registry_passwords}
    groups = {
        name: [member.data.get("private_ip") or member.name for member in members]
        for name, members in inventory.groups.items()
    }
    return compose(
        knob(data, "app_env"),
        secrets,
        inventory_builtins(groups),
        declarations,
        secrets_source=f"secrets file {secrets_file}",
        envfile=knob(data, "app_env_spec"),
    )
