"""Every setting's one declaration, read as plain data: the ``DEFAULTS = {...}`` literal of
each module that declares settings, with the comment above each key.

The modules are read, never imported: a component's module holds behaviour (pyinfra
operations, the app's environment...), and the settings schema (config.py) must not
depend on it. A ``DEFAULTS`` that is not a literal is an error here, at once.

A comment describes the key below it; a key right below another, with no comment and
no blank line of its own, shares that key's comment (a pair such as "the worker's
command, and the line it logs once it takes jobs").
"""

from __future__ import annotations

import ast
import io
import tokenize
from dataclasses import dataclass
from functools import cache

from .paths import REPO_ROOT

PACKAGE = REPO_ROOT / "deploykit"
# The modules that declare settings, in the order docs/settings.md lists them.
SOURCES = (
    "components/bootstrap.py",
    "components/common.py",
    "components/hardening.py",
    "components/docker.py",
    "components/haproxy.py",
    "components/app.py",
    "components/central_logging.py",
    "components/accessories.py",
    "components/postgres.py",
    "components/redis.py",
    "components/jobs.py",
    "components/scheduled_jobs.py",
    "rollout/settings.py",
)


class DeclarationError(Exception):
    """A DEFAULTS the schema cannot read; the message names the file and line."""


@dataclass(frozen=True)
class Setting:
    key: str
    default: object
    comment: str


@dataclass(frozen=True)
class Declarations:
    """The settings one module declares."""

    source: str  # relative to the package: components/docker.py
    settings: tuple[Setting, ...]

    @property
    def title(self) -> str:
        """A component's name (docker), or the package for rollout/settings.py (rollout)."""
        folder, _, module = self.source.removesuffix(".py").rpartition("/")
        return module if folder == "components" else folder

    @property
    def path(self) -> str:
        """Relative to the repository: deploykit/components/docker.py"""
        return f"deploykit/{self.source}"

    def defaults(self) -> dict[str, object]:
        return {setting.key: setting.default for setting in self.settings}


@cache
def all_declarations() -> tuple[Declarations, ...]:
    return tuple(read_declarations(source) for source in SOURCES)


def read_declarations(source: str) -> Declarations:
    text = (PACKAGE / source).read_text()
    return Declarations(source, tuple(parse_defaults(text, f"deploykit/{source}")))


def parse_defaults(text: str, filename: str) -> list[Setting]:
    """The keys of the module-level ``DEFAULTS`` dict in `text`, in order, each with its
    default and its comment."""
    literal = _defaults_node(ast.parse(text, filename=filename), filename)
    comments = _comment_lines(text)
    blank = {number for number, line in enumerate(text.splitlines(), start=1) if not line.strip()}
    settings: list[Setting] = []
    previous_end = literal.lineno
    shared = ""
    for key_node, value_node in zip(literal.keys, literal.values):
        if not isinstance(key_node, ast.Constant) or not isinstance(key_node.value, str):
            raise DeclarationError(f"{filename}:{key_node.lineno}: a DEFAULTS key must be a string")
        between = range(previous_end + 1, key_node.lineno)
        above = [comments[number] for number in between if number in comments]
        if above:
            shared = " ".join(above)
        elif any(number in blank for number in between) or not settings:
            shared = ""
        try:
            default = ast.literal_eval(value_node)
        except ValueError:
            raise DeclarationError(
                f"{filename}:{value_node.lineno}: the default of {key_node.value!r} is not a "
                "literal (the settings schema reads DEFAULTS without running the module)"
            ) from None
        settings.append(Setting(key_node.value, default, shared))
        previous_end = value_node.end_lineno
    return settings


def _defaults_node(tree: ast.Module, filename: str) -> ast.Dict:
    for node in tree.body:
        targets = node.targets if isinstance(node, ast.Assign) else []
        if isinstance(node, ast.AnnAssign):
            targets = [node.target]
        if any(isinstance(target, ast.Name) and target.id == "DEFAULTS" for target in targets):
            if not isinstance(node.value, ast.Dict):
                raise DeclarationError(f"{filename}:{node.lineno}: DEFAULTS must be a dict literal")
            return node.value
    raise DeclarationError(f"{filename}: declares no DEFAULTS")


def _comment_lines(text: str) -> dict[int, str]:
    """Line number -> the text of a comment that is alone on its line."""
    comments = {}
    lines = text.splitlines()
    for token in tokenize.generate_tokens(io.StringIO(text).readline):
        if token.type == tokenize.COMMENT:
            number = token.start[0]
            if lines[number - 1].lstrip().startswith("#"):
                comments[number] = token.string[1:].strip()
    return comments
