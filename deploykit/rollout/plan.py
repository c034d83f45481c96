"""The order of a roll: the first host alone (the canary), then batches; the tag to
roll to, or back to. Pure."""

from __future__ import annotations

import math
import re

DOCKER_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")


class PlanError(ValueError):
    """Bad input for a roll, caught before any host is touched."""


def parse_batch_size(value: object, host_count: int) -> int:
    """A number of hosts ("2", 2) or a share of them ("25%"); at least 1, at most all."""
    text = str(value).strip()
    if text.endswith("%"):
        try:
            percent = float(text[:-1])
        except ValueError:
            raise PlanError(f"batch size {value!r} is not a number or a percentage") from None
        if not 0 < percent <= 100:
            raise PlanError(f"batch size {value!r} must be above 0% and at most 100%")
        return max(1, math.floor(host_count * percent / 100))
    if not text.isdigit():
        raise PlanError(f"batch size {value!r} is not a whole number or a percentage")
    size = int(text)
    if size < 1:
        raise PlanError(f"batch size {value!r} must be at least 1")
    return min(size, max(host_count, 1))


def plan_batches(hosts: list[str], batch_size: object) -> list[list[str]]:
    """Inventory order; the first host goes alone so a bad release stops at one host."""
    if not hosts:
        raise PlanError("there are no web hosts to roll")
    size = parse_batch_size(batch_size, len(hosts))
    canary, rest = hosts[:1], hosts[1:]
    return [canary] + [rest[i : i + size] for i in range(0, len(rest), size)]


def check_tag(tag: object) -> str:
    # fullmatch: `$` alone would let a trailing newline through.
    if not isinstance(tag, str) or not DOCKER_TAG.fullmatch(tag):
        raise PlanError(
            f"image tag {tag!r} is not a valid Docker tag "
            "(letters, digits, _ . -; not starting with . or -; at most 128)"
        )
    return tag


def previous_release(release_log_text: str, current_tag: str | None) -> str | None:
    """The release before the current one, from a host's release log (oldest first)."""
    tags = [line.strip() for line in release_log_text.splitlines() if line.strip()]
    if current_tag is not None:
        while tags and tags[-1] == current_tag:
            tags.pop()
    return tags[-1] if tags else None
