"""What a web host runs, read from its containers' labels. Pure parsing, no I/O.

A roll that was interrupted (the deploy killed, SSH dropped, the host rebooted) can
leave a host with several releases: an old pair still serving, a new app with no
nginx, a stopped nginx. The next roll reads that state instead of assuming it.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..commands.pairs import Pair, parse_pairs


@dataclass
class Release:
    pair: Pair
    # Docker's state of each container ("running", "exited"...), None when absent.
    app: str | None = None
    nginx: str | None = None

    @property
    def serving(self) -> bool:
        return self.app == "running" and self.nginx == "running"


@dataclass
class HostContainers:
    releases: list[Release]  # oldest first

    @classmethod
    def parse(cls, output: str) -> "HostContainers":
        by_release: dict[str, Release] = {}
        for role, tag, release, state, digest in parse_pairs(output):
            entry = by_release.setdefault(release, Release(Pair(release, tag, digest)))
            if role in ("app", "nginx"):
                setattr(entry, role, state)
        ordered = sorted(by_release.values(), key=lambda r: r.pair.release.rsplit("-", 1)[-1])
        return cls(ordered)

    def current(self) -> Release | None:
        """The release holding the host's port: the latest with a running nginx; else the
        latest with both containers (stopped ones can be started again)."""
        for release in reversed(self.releases):
            if release.nginx == "running":
                return release
        for release in reversed(self.releases):
            if release.app and release.nginx:
                return release
        return None

    def others(self, keep: set[str]) -> list[Release]:
        return [r for r in self.releases if r.pair.release not in keep]
