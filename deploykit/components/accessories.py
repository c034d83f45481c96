"""Accessories: containerized services beside the app (a search engine, a cache...) on
the hosts their declaration names, each a `docker run` of its own.

pyinfra's docker.container never recreates a container whose image, ports or env
changed (pyinfra issue #1561), so each container carries a hash of its declared spec
in a label: a different hash recreates it (graceful stop, new container), the same
hash leaves it alone. Named volumes outlive the container, so data survives.
"""

from __future__ import annotations

import difflib
import hashlib
import re

from pyinfra import host, inventory, state
from pyinfra.api import deploy

from ..commands.accessories import accessory_container_name, run_accessory
from ..errors import refuse
from ..operations.accessories import accessory_container, accessory_removed
from ..operations.config_file import config_file, render_template
from ..operations.images import image_pulled
from ..secrets import SecretsError, load_secrets

DEFAULTS = {
    # Containerized services by name, each {"image": "repo:tag", "hosts": [hosts or
    # groups], "ports": ["9200:9200"], "volumes": ["search-data:/data"], "env": {...},
    # "secrets": [names in app_secrets_file], "command": [...]}; only image and hosts
    # are required. A change to one recreates its container; named volumes are kept.
    "accessories": {},
    # Folder of the accessories' env files on their hosts (mode 0600: root only).
    "accessories_env_dir": "/etc/deploykit/accessories",
    # Seconds a replaced accessory gets to shut down cleanly (SIGTERM, then SIGKILL).
    "accessories_stop_timeout_s": 30,
}

SPEC_KEYS = {"image", "hosts", "ports", "volumes", "env", "secrets", "command"}
NAME = re.compile(r"[a-z0-9][a-z0-9_.-]*\Z")
# [ip:]host_port:container_port[/tcp|udp]
PORT = re.compile(r"((\d{1,3}\.){3}\d{1,3}:)?\d{1,5}:\d{1,5}(/(tcp|udp))?\Z")
# named_volume:/path or /host/path:/path, optionally :ro
VOLUME = re.compile(r"([A-Za-z0-9][A-Za-z0-9_.-]*|/[^:]*):/[^:]*(:(ro|rw))?\Z")


def spec_problems(name: str, spec, is_target, secret_names: set[str] | None) -> list[str]:
    """What is wrong with one declaration, each problem naming the accessory."""
    where = f"accessory {name!r}"
    if not NAME.match(str(name)):
        return [f"{where}: a name is lowercase letters, digits, '.', '_' or '-'"]
    if not isinstance(spec, dict):
        return [f"{where}: must be a dict with at least image and hosts"]
    problems = []
    for key in sorted(set(spec) - SPEC_KEYS):
        close = difflib.get_close_matches(key, sorted(SPEC_KEYS), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        problems.append(f"{where}: unknown key {key!r}{hint}")
    if not isinstance(spec.get("image"), str) or not spec.get("image"):
        problems.append(f"{where}: no image")
    hosts = spec.get("hosts")
    if not hosts or not _is_list_of_str(hosts):
        problems.append(f"{where}: hosts must list host or group names")
    else:
        unknown = [target for target in hosts if not is_target(target)]
        if unknown:
            problems.append(
                f"{where}: {', '.join(map(repr, unknown))} is neither a host nor a group "
                "of this inventory"
            )
    for key, pattern, example in (
        ("ports", PORT, "'9200:9200'"),
        ("volumes", VOLUME, "'search-data:/usr/share/elasticsearch/data'"),
    ):
        values = spec.get(key, [])
        if not _is_list_of_str(values):
            problems.append(f"{where}: {key} must be a list of strings such as {example}")
            continue
        bad = [value for value in values if not pattern.match(value)]
        if bad:
            problems.append(f"{where}: {key} {', '.join(map(repr, bad))}: expected {example}")
    env = spec.get("env", {})
    if not isinstance(env, dict) or not all(
        isinstance(k, str) and isinstance(v, (str, int)) and not isinstance(v, bool)
        for k, v in env.items()
    ):
        problems.append(f"{where}: env must map names to strings")
    elif any("\n" in str(v) for v in env.values()):
        problems.append(f"{where}: env values are one line each")
    if not _is_list_of_str(spec.get("command", [])):
        problems.append(f"{where}: command must be a list of words")
    secrets = spec.get("secrets", [])
    if not _is_list_of_str(secrets):
        problems.append(f"{where}: secrets must list names from app_secrets_file")
    elif secret_names is not None:
        missing = [s for s in secrets if s not in secret_names]
        if missing:
            problems.append(f"{where}: secrets {', '.join(missing)} not in app_secrets_file")
    return problems


def _is_list_of_str(value) -> bool:
    return isinstance(value, list) and all(isinstance(item, str) for item in value)


def _is_target(name: str) -> bool:
    return inventory.get_host(name, default=None) is not None or bool(
        inventory.get_group(name, default=None)
    )


_checked_states: set[int] = set()


def check_accessories() -> None:
    """Every host's declarations, checked once per run while planning."""
    if id(state) in _checked_states:
        return
    _checked_states.add(id(state))
    problems: list[str] = []
    for target in inventory:
        declared = target.data.get("accessories") or {}
        if not isinstance(declared, dict):
            problems.append(f"host {target.name}: accessories must be a dict: name -> declaration")
            continue
        secret_names = None
        if any((spec or {}).get("secrets") for spec in declared.values() if isinstance(spec, dict)):
            try:
                secret_names = set(load_secrets(target.data.get("app_secrets_file") or ""))
            except SecretsError as error:
                problems.append(str(error))
        for name, spec in declared.items():
            problems += spec_problems(name, spec, _is_target, secret_names)
    if problems:
        refuse(sorted(set(problems)))


def accessories_of(target) -> dict[str, dict]:
    """The accessories whose hosts name this host or one of its groups."""
    declared = target.data.get("accessories") or {}
    names = {target.name, *target.groups}
    return {name: spec for name, spec in declared.items() if names & set(spec["hosts"])}


def env_file_content(spec: dict, secrets: dict[str, str]) -> str:
    env = {key: str(value) for key, value in (spec.get("env") or {}).items()}
    env.update({name: secrets[name] for name in spec.get("secrets") or []})
    return render_template("accessory.env.j2", env=env)


def spec_hash(run_command: str, env_content: str) -> str:
    """The container's identity: its run line and its env file (a secret's rotation
    recreates it too). Only a 16-digit prefix of the digest is kept in the label."""
    return hashlib.sha256(f"{run_command}\n{env_content}".encode()).hexdigest()[:16]


@deploy("Accessories", data_defaults=DEFAULTS)
def accessories() -> None:
    check_accessories()
    mine = accessories_of(host)
    secrets = {}
    if any(spec.get("secrets") for spec in mine.values()):
        secrets = load_secrets(host.data.get("app_secrets_file") or "")
    env_dir = host.data.accessories_env_dir
    for name, spec in sorted(mine.items()):
        env_file = f"{env_dir}/{name}.env"
        content = env_file_content(spec, secrets)
        image_pulled(name=f"Ensure {spec['image']} is on the host", image=spec["image"])
        config_file(
            name=f"Ensure the environment file of accessory {name} is current and private",
            content=content,
            dest=env_file,
            mode=0o600,
            secrets=[secrets[s] for s in spec.get("secrets") or []],
        )
        arguments = {
            "env_file": env_file,
            "ports": list(spec.get("ports") or []),
            "volumes": list(spec.get("volumes") or []),
            "command": list(spec.get("command") or []),
        }
        unlabeled = run_accessory(name, spec["image"], spec_hash="", **arguments)
        wanted = spec_hash(unlabeled, content)
        accessory_container(
            name=f"Ensure accessory {name} runs {spec['image']} as declared",
            accessory=name,
            spec=wanted,
            run_command=run_accessory(name, spec["image"], spec_hash=wanted, **arguments),
            stop_timeout_s=int(host.data.accessories_stop_timeout_s),
        )
    keep = [accessory_container_name(name) for name in mine]
    accessory_removed(
        name="Ensure no accessory runs here that is no longer declared for this host",
        keep=keep,
        stop_timeout_s=int(host.data.accessories_stop_timeout_s),
    )
