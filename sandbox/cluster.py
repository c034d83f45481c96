"""A local fleet of VM-like hosts, as Docker containers, driven by the Docker SDK.

Each host runs systemd as PID 1 and sshd, answers SSH on a port published on
127.0.0.1, and has nothing else installed: provisioning installs Docker, HAProxy and
the data services for real. Everything the sandbox creates carries the label
``io.deploykit.sandbox``; ``down()`` removes by that label and touches nothing else.

The sandbox knows nothing of the deploy code. It writes ``.sandbox/cluster.json``,
which ``inventories/sandbox.py`` reads.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import socket
import subprocess
import tarfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import docker
import docker.errors
from docker.models.containers import Container
from docker.types import EndpointConfig

from .images import HOST_IMAGE, REGISTRY_IMAGE, SANDBOX_LABEL, ensure_images
from .secrets import ensure_secrets_file
from .tls import ensure_postgres_certificate, ensure_self_signed_pem

log = logging.getLogger("sandbox")

REPO_ROOT = Path(__file__).resolve().parent.parent
STATE_DIR = Path(os.environ.get("SANDBOX_DIR", REPO_ROOT / ".sandbox"))
STATE_FILE = STATE_DIR / "cluster.json"
KEY_FILE = STATE_DIR / "id_ed25519"
KNOWN_HOSTS_FILE = STATE_DIR / "known_hosts"
TLS_PEM_FILE = STATE_DIR / "tls" / "haproxy.pem"
POSTGRES_CERTIFICATE_FILE = STATE_DIR / "tls" / "postgres.crt"
POSTGRES_KEY_FILE = STATE_DIR / "tls" / "postgres.key"
SECRETS_FILE = STATE_DIR / "secrets.env"

NETWORK = "deploykit-sandbox"
PREFIX = "deploykit-sandbox-"
REGISTRY_ALIAS = "registry"
REGISTRY_PORT = 5000
SSH_PORT_BASE = int(os.environ.get("SANDBOX_SSH_PORT_BASE", "2200"))
LB_HTTP_PORT = 8080
LB_HTTPS_PORT = 8443
BOOT_TIMEOUT = 120

# What a systemd host running its own Docker engine needs where --privileged is
# refused (a machine without CAP_SYS_RESOURCE: "unable to apply caps").
UNPRIVILEGED_HOST_OPTIONS = {
    "cap_add": ["ALL"],
    "cap_drop": ["SYS_RESOURCE"],
    "security_opt": ["seccomp=unconfined", "apparmor=unconfined"],
    "cgroupns": "host",
}


@dataclass(frozen=True)
class Topology:
    """How many hosts of each group; read from SANDBOX_* environment variables."""

    lb: int = 1
    web: int = 3
    job: int = 1
    db: int = 1

    @classmethod
    def from_environ(cls, environ: dict[str, str] | None = None) -> "Topology":
        environ = dict(os.environ if environ is None else environ)
        counts = {}
        for group, default, low, high in (
            ("lb", 1, 1, 2),
            ("web", 3, 1, 16),
            ("job", 1, 0, 4),
            ("db", 1, 0, 1),
        ):
            variable = f"SANDBOX_{group.upper()}"
            raw = environ.get(variable, str(default))
            try:
                value = int(raw)
            except ValueError:
                raise SystemExit(f"sandbox: {variable}={raw!r} is not a whole number") from None
            if not low <= value <= high:
                raise SystemExit(f"sandbox: {variable}={value} is out of range {low}..{high}")
            counts[group] = value
        return cls(**counts)

    def hosts(self) -> list[tuple[str, str]]:
        """(name, group) in inventory order."""
        return [
            (f"{group}{index}", group)
            for group in ("lb", "web", "job", "db")
            for index in range(1, getattr(self, group) + 1)
        ]


@dataclass
class SandboxHost:
    name: str
    group: str
    ssh_port: int
    private_ip: str
    published: dict[str, int]


def client() -> docker.DockerClient:
    try:
        docker_client = docker.from_env()
        docker_client.ping()
    except docker.errors.DockerException as error:
        raise SystemExit(f"sandbox: no Docker engine answers ({error}); start dockerd") from error
    return docker_client


def labels(**extra: str) -> dict[str, str]:
    return {SANDBOX_LABEL: "1", **{f"{SANDBOX_LABEL}.{k}": v for k, v in extra.items()}}


def ensure_ssh_key() -> str:
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    if not KEY_FILE.exists():
        subprocess.run(
            [
                "ssh-keygen",
                "-q",
                "-t",
                "ed25519",
                "-N",
                "",
                "-C",
                "deploykit-sandbox",
                "-f",
                str(KEY_FILE),
            ],
            check=True,
        )
    return KEY_FILE.with_suffix(".pub").read_text()


def key_id(public_key: str) -> str:
    """Which sandbox key a host was created to trust (a label on its container)."""
    return hashlib.sha256(public_key.strip().encode()).hexdigest()[:16]


def _authorized_keys_tar(public_key: str) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        ssh_dir = tarfile.TarInfo(".ssh")
        ssh_dir.type, ssh_dir.mode = tarfile.DIRTYPE, 0o700
        archive.addfile(ssh_dir)
        data = public_key.encode()
        keys = tarfile.TarInfo(".ssh/authorized_keys")
        keys.mode, keys.size = 0o600, len(data)
        archive.addfile(keys, io.BytesIO(data))
    return buffer.getvalue()


def _ensure_network(docker_client: docker.DockerClient):
    existing = docker_client.networks.list(names=[NETWORK])
    if existing:
        return existing[0]
    return docker_client.networks.create(NETWORK, driver="bridge", labels=labels())


# Each group has its own range of SSH ports, so growing one group never moves another.
SSH_PORT_OFFSETS = {"lb": 0, "web": 10, "job": 40, "db": 50}


def _host_ports(name: str, group: str) -> dict[str, tuple[str, int]]:
    # Fixed ports, not random ones: Docker picks a new random port when a container
    # restarts, and a rebooted host must stay where the inventory says it is.
    index = int(name[len(group) :])
    ssh_port = SSH_PORT_BASE + SSH_PORT_OFFSETS[group] + index
    ports: dict[str, tuple[str, int]] = {"22/tcp": ("127.0.0.1", ssh_port)}
    if group == "lb":
        ports["80/tcp"] = ("127.0.0.1", LB_HTTP_PORT + index - 1)
        ports["443/tcp"] = ("127.0.0.1", LB_HTTPS_PORT + index - 1)
    return ports


class Sandbox:
    def __init__(self, docker_client: docker.DockerClient | None = None):
        self.docker = docker_client or client()
        # None until the first host tells us whether --privileged works here.
        self._privileged: bool | None = None

    # -- creation ---------------------------------------------------------------------

    def up(self, topology: Topology, rebuild: bool = False) -> list[SandboxHost]:
        ensure_images(self.docker, rebuild=rebuild)
        public_key = ensure_ssh_key()
        ensure_self_signed_pem(TLS_PEM_FILE)
        ensure_postgres_certificate(POSTGRES_CERTIFICATE_FILE, POSTGRES_KEY_FILE)
        ensure_secrets_file(SECRETS_FILE)
        network = _ensure_network(self.docker)
        self._ensure_registry(network.name)
        wanted = topology.hosts()
        wanted_names = {name for name, _ in wanted}
        for container in self._containers(kind="host"):
            name = container.labels.get(f"{SANDBOX_LABEL}.host")
            if name not in wanted_names:
                log.info("removing %s (not in the topology)", container.name)
                self._remove_host(container, name)
        containers = [
            self._ensure_host(name, group, public_key, network.name) for name, group in wanted
        ]
        hosts = [self._wait_until_booted(container) for container in containers]
        self._write_state(hosts)
        return hosts

    def _containers(self, kind: str | None = None) -> list[Container]:
        selector = [f"{SANDBOX_LABEL}=1"]
        if kind:
            selector.append(f"{SANDBOX_LABEL}.kind={kind}")
        return self.docker.containers.list(all=True, filters={"label": selector})

    def _ensure_registry(self, network: str) -> None:
        name = PREFIX + REGISTRY_ALIAS
        try:
            container = self.docker.containers.get(name)
        except docker.errors.NotFound:
            volume = self.docker.volumes.create(PREFIX + "registry-data", labels=labels())
            container = self.docker.containers.run(
                REGISTRY_IMAGE,
                name=name,
                detach=True,
                labels=labels(kind="registry"),
                network=network,
                networking_config={network: EndpointConfig("1.41", aliases=[REGISTRY_ALIAS])},
                ports={f"{REGISTRY_PORT}/tcp": ("127.0.0.1", REGISTRY_PORT)},
                volumes={volume.name: {"bind": "/var/lib/docker-registry", "mode": "rw"}},
                restart_policy={"Name": "unless-stopped"},
            )
        if container.status != "running":
            container.start()

    def _ensure_host(self, name: str, group: str, public_key: str, network: str) -> Container:
        container_name = PREFIX + name
        try:
            container = self.docker.containers.get(container_name)
        except docker.errors.NotFound:
            return self._create_host(name, group, public_key, network)
        if container.labels.get(f"{SANDBOX_LABEL}.key") != key_id(public_key):
            # Created for another key (another clone's .sandbox, or a key deleted since):
            # nothing here could log in to it, so it starts again as a fresh host.
            log.info("recreating %s (it trusts another sandbox key)", container_name)
            self._remove_host(container, name)
            return self._create_host(name, group, public_key, network)
        if container.status != "running":
            container.start()
        return container

    def _remove_host(self, container: Container, name: str) -> None:
        container.remove(force=True, v=False)
        # Its Docker volume too: a host added back later must start fresh.
        for volume in self.docker.volumes.list(filters={"label": [f"{SANDBOX_LABEL}.host={name}"]}):
            volume.remove(force=True)

    def _create_host(self, name: str, group: str, public_key: str, network: str) -> Container:
        volume = self.docker.volumes.create(f"{PREFIX}{name}-docker", labels=labels(host=name))
        options = dict(
            name=PREFIX + name,
            hostname=name,
            labels=labels(kind="host", host=name, group=group, key=key_id(public_key)),
            network=network,
            # The alias lets hosts find each other by name, as on a private LAN.
            networking_config={network: EndpointConfig("1.41", aliases=[name])},
            ports=_host_ports(name, group),
            environment={"container": "docker"},
            tmpfs={"/run": "", "/run/lock": "", "/tmp": ""},
            # overlay2 cannot stack on the container's own overlay root: without a volume
            # here the nested engine falls back to vfs, which copies every layer in full.
            volumes={
                volume.name: {"bind": "/var/lib/docker", "mode": "rw"},
                "/sys/fs/cgroup": {"bind": "/sys/fs/cgroup", "mode": "rw"},
            },
            stop_signal="SIGRTMIN+3",
            # A VM comes back after a crash or a reboot of its hypervisor.
            restart_policy={"Name": "unless-stopped"},
        )
        container = self.docker.containers.create(HOST_IMAGE, **options, **self._privileges())
        container.put_archive("/root", _authorized_keys_tar(public_key))
        try:
            container.start()
        except docker.errors.APIError as error:
            if not self._privileged:
                raise
            log.info("--privileged is refused here (%s); using explicit capabilities", error)
            container.remove(force=True)
            self._privileged = False
            container = self.docker.containers.create(HOST_IMAGE, **options, **self._privileges())
            container.put_archive("/root", _authorized_keys_tar(public_key))
            container.start()
        else:
            if self._privileged is None:
                self._privileged = True
        return container

    def _privileges(self) -> dict:
        if self._privileged is False:
            return dict(UNPRIVILEGED_HOST_OPTIONS)
        if self._privileged is None:
            self._privileged = True
        return {"privileged": True, "cgroupns": "host"}

    def _wait_until_booted(self, container: Container) -> SandboxHost:
        deadline = time.monotonic() + BOOT_TIMEOUT
        state = ""
        while time.monotonic() < deadline:
            result = container.exec_run(["systemctl", "is-active", "ssh.service"])
            state = result.output.decode().strip()
            if state == "active":
                break
            time.sleep(0.5)
        else:
            raise SystemExit(f"sandbox: {container.name} did not start sshd ({state})")
        container.reload()
        ports = container.attrs["NetworkSettings"]["Ports"]
        published = {
            key.split("/")[0]: int(value[0]["HostPort"]) for key, value in ports.items() if value
        }
        host = SandboxHost(
            name=container.labels[f"{SANDBOX_LABEL}.host"],
            group=container.labels[f"{SANDBOX_LABEL}.group"],
            ssh_port=published["22"],
            private_ip=container.attrs["NetworkSettings"]["Networks"][NETWORK]["IPAddress"],
            published=published,
        )
        _wait_for_port("127.0.0.1", host.ssh_port, deadline)
        return host

    def _host_key_lines(self, hosts: list[SandboxHost]) -> list[str]:
        lines = []
        for host in hosts:
            container = self.docker.containers.get(PREFIX + host.name)
            key = container.exec_run(["cat", "/etc/ssh/ssh_host_ed25519_key.pub"])
            key_type, key_data = key.output.decode().split()[:2]
            lines.append(f"[127.0.0.1]:{host.ssh_port} {key_type} {key_data}")
        return lines

    def _write_state(self, hosts: list[SandboxHost]) -> None:
        KNOWN_HOSTS_FILE.write_text("\n".join(self._host_key_lines(hosts)) + "\n")
        state = {
            "ssh_key": str(KEY_FILE),
            "known_hosts": str(KNOWN_HOSTS_FILE),
            "tls_pem": str(TLS_PEM_FILE),
            "secrets_file": str(SECRETS_FILE),
            "registry": {
                "from_hosts": f"{REGISTRY_ALIAS}:{REGISTRY_PORT}",
                "from_here": f"127.0.0.1:{REGISTRY_PORT}",
            },
            "hosts": [asdict(host) for host in hosts],
        }
        STATE_FILE.write_text(json.dumps(state, indent=2) + "\n")

    # -- inspection and removal -------------------------------------------------------

    def status(self) -> list[tuple[str, str]]:
        return [(c.name, c.status) for c in self._containers()]

    def host_container(self, name: str) -> Container:
        return self.docker.containers.get(PREFIX + name)

    def down(self) -> None:
        """Remove every container, volume and network labelled as the sandbox's."""
        selector = {"label": [f"{SANDBOX_LABEL}=1"]}
        for container in self.docker.containers.list(all=True, filters=selector):
            log.info("removing container %s", container.name)
            container.remove(force=True, v=True)
        for volume in self.docker.volumes.list(filters=selector):
            log.info("removing volume %s", volume.name)
            volume.remove(force=True)
        for network in self.docker.networks.list(filters=selector):
            log.info("removing network %s", network.name)
            network.remove()
        for path in (STATE_FILE, KNOWN_HOSTS_FILE):
            path.unlink(missing_ok=True)


def _wait_for_port(address: str, port: int, deadline: float) -> None:
    while True:
        try:
            with socket.create_connection((address, port), timeout=2) as connection:
                if connection.recv(4).startswith(b"SSH-"):
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise SystemExit(f"sandbox: nothing answers SSH on {address}:{port}")
        time.sleep(0.3)
