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
import shutil
import socket
import ssl
import subprocess
import tarfile
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

import docker
import docker.errors
from docker.models.containers import Container
from docker.types import EndpointConfig

import bcrypt

from .images import (
    BASE_IMAGE,
    DEFAULT_RELEASE,
    IMAGES_DIR,
    REGISTRY_IMAGE,
    RELEASES,
    SANDBOX_LABEL,
    check_release,
    ensure_images,
    host_image,
)
from .secrets import ensure_secrets_file, read_secret
from .tls import (
    ensure_ca,
    ensure_fleet_ca,
    ensure_fleet_certificate,
    ensure_postgres_certificate,
    ensure_self_signed_pem,
    ensure_signed_certificate,
)

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
# The sandbox's own CA, which signs the registry's certificate; hosts trust it through
# docker_registry_ca_files (group_data/sandbox.py).
CA_CERTIFICATE_FILE = STATE_DIR / "tls" / "registry-ca.crt"
CA_KEY_FILE = STATE_DIR / "tls" / "registry-ca.key"
REGISTRY_CERTIFICATE_FILE = STATE_DIR / "tls" / "registry.crt"
REGISTRY_KEY_FILE = STATE_DIR / "tls" / "registry.key"
# The registry's one account; its password is REGISTRY_PASSWORD in SECRETS_FILE.
REGISTRY_USER = "deploykit"
REGISTRY_CONFIG = IMAGES_DIR / "registry" / "config.yml"
REGISTRY_READY_TIMEOUT = 60
# Where this machine's Docker engine looks for a registry's CA (see _trust_registry_here).
DOCKER_CERTS_DIR = Path(os.environ.get("SANDBOX_DOCKER_CERTS_DIR", "/etc/docker/certs.d"))
# The fleet's own CA, and what it signs: the web hosts' nginx certificate (HAProxy checks
# it) and the remote syslog receiver's (rsyslog checks it).
FLEET_CA_FILES = (STATE_DIR / "tls" / "fleet-ca.crt", STATE_DIR / "tls" / "fleet-ca.key")
WEB_TLS_FILES = (STATE_DIR / "tls" / "web.crt", STATE_DIR / "tls" / "web.key")

# Several sandboxes can live side by side on one machine (one per work tree):
# SANDBOX_INSTANCE=N (0-9) gives instance N its own container names, network, label
# value and published ports (each shifted by 100 * N). 0, the default, keeps the
# plain names and ports the README shows.
INSTANCE = int(os.environ.get("SANDBOX_INSTANCE", "0"))
if not 0 <= INSTANCE <= 9:
    raise SystemExit(f"sandbox: SANDBOX_INSTANCE={INSTANCE} is out of range 0..9")
INSTANCE_NAME = "deploykit-sandbox" + (str(INSTANCE) if INSTANCE else "")
LABEL_VALUE = str(INSTANCE + 1)
PORT_SHIFT = 100 * INSTANCE
NETWORK = INSTANCE_NAME
PREFIX = INSTANCE_NAME + "-"
REGISTRY_ALIAS = "registry"
REGISTRY_PORT = 5000
REGISTRY_PUBLISHED_PORT = REGISTRY_PORT + PORT_SHIFT
SSH_PORT_BASE = int(os.environ.get("SANDBOX_SSH_PORT_BASE", "2200")) + PORT_SHIFT
LB_HTTP_PORT = 8080 + PORT_SHIFT
LB_HTTPS_PORT = 8443 + PORT_SHIFT
# Seconds for a host to boot to a running sshd. Generous: on a busy 2-core machine
# (several sandboxes, first-boot key generation) two minutes was seen to run out.
BOOT_TIMEOUT = 300
# The remote syslog receiver (a stand-in for a hosted log service): its name on the
# sandbox network, its TLS port, and the file inside it where it appends what it gets.
SYSLOG_RECEIVER_ALIAS = "syslog-collector"
SYSLOG_RECEIVER_PORT = 6514
SYSLOG_RECEIVED = "/tmp/received.log"

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
    """How many hosts of each group, and the Debian release of each host; read from
    SANDBOX_* environment variables. SANDBOX_RELEASE (trixie or bookworm) is every
    host's release; SANDBOX_RELEASES="web1=bookworm web2=trixie" overrides it per host
    (a fleet in the middle of an OS upgrade)."""

    lb: int = 1
    web: int = 3
    job: int = 1
    db: int = 1
    release: str = DEFAULT_RELEASE
    host_releases: tuple[tuple[str, str], ...] = ()

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
        release = check_release(environ.get("SANDBOX_RELEASE") or DEFAULT_RELEASE)
        topology = cls(**counts, release=release)
        host_releases = parse_host_releases(environ.get("SANDBOX_RELEASES", ""))
        names = {name for name, _ in topology.hosts()}
        for name, _ in host_releases:
            if name not in names:
                raise SystemExit(
                    f"sandbox: SANDBOX_RELEASES names {name!r}, which is not in the topology "
                    f"({', '.join(sorted(names))})"
                )
        return cls(**counts, release=release, host_releases=host_releases)

    def hosts(self) -> list[tuple[str, str]]:
        """(name, group) in inventory order."""
        return [
            (f"{group}{index}", group)
            for group in ("lb", "web", "job", "db")
            for index in range(1, getattr(self, group) + 1)
        ]

    def release_of(self, name: str) -> str:
        return dict(self.host_releases).get(name, self.release)

    def releases(self) -> list[str]:
        """The releases the hosts run, each once."""
        return list(dict.fromkeys(self.release_of(name) for name, _ in self.hosts()))


def parse_host_releases(text: str) -> tuple[tuple[str, str], ...]:
    """ "web1=bookworm, web2=trixie" -> (("web1", "bookworm"), ("web2", "trixie"))"""
    pairs = []
    for item in text.replace(",", " ").split():
        name, equals, release = item.partition("=")
        if not equals or not name:
            raise SystemExit(
                f"sandbox: SANDBOX_RELEASES item {item!r} is not HOST=RELEASE "
                f"(e.g. web1=bookworm; releases: {', '.join(RELEASES)})"
            )
        pairs.append((name, check_release(release, f"SANDBOX_RELEASES {name}")))
    return tuple(pairs)


@dataclass
class SandboxHost:
    name: str
    group: str
    ssh_port: int
    private_ip: str
    published: dict[str, int]
    # Debian codename of the host's image (trixie, bookworm).
    release: str


def client() -> docker.DockerClient:
    try:
        docker_client = docker.from_env()
        docker_client.ping()
    except docker.errors.DockerException as error:
        raise SystemExit(f"sandbox: no Docker engine answers ({error}); start dockerd") from error
    return docker_client


def labels(**extra: str) -> dict[str, str]:
    return {SANDBOX_LABEL: LABEL_VALUE, **{f"{SANDBOX_LABEL}.{k}": v for k, v in extra.items()}}


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
    # Docker's name filter matches substrings ("deploykit-sandbox" finds
    # "deploykit-sandbox3" too): keep only this instance's own network.
    existing = [n for n in docker_client.networks.list(names=[NETWORK]) if n.name == NETWORK]
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
        ensure_images(self.docker, releases=topology.releases(), rebuild=rebuild)
        public_key = ensure_ssh_key()
        ensure_self_signed_pem(TLS_PEM_FILE)
        ensure_postgres_certificate(POSTGRES_CERTIFICATE_FILE, POSTGRES_KEY_FILE)
        ensure_fleet_ca(*FLEET_CA_FILES)
        ensure_fleet_certificate(*WEB_TLS_FILES, FLEET_CA_FILES, "web", ["web"])
        ensure_secrets_file(SECRETS_FILE)
        ensure_ca(CA_CERTIFICATE_FILE, CA_KEY_FILE)
        ensure_signed_certificate(
            CA_CERTIFICATE_FILE,
            CA_KEY_FILE,
            REGISTRY_CERTIFICATE_FILE,
            REGISTRY_KEY_FILE,
            dns_names=[REGISTRY_ALIAS, "localhost"],
            ip_addresses=["127.0.0.1"],
        )
        network = _ensure_network(self.docker)
        self._ensure_registry(network.name)
        _wait_for_registry()
        _trust_registry_here()
        _log_in_here()
        wanted = topology.hosts()
        wanted_names = {name for name, _ in wanted}
        for container in self._containers(kind="host"):
            name = container.labels.get(f"{SANDBOX_LABEL}.host")
            if name not in wanted_names:
                log.info("removing %s (not in the topology)", container.name)
                self._remove_host(container, name)
        containers = [
            self._ensure_host(name, group, topology.release_of(name), public_key, network.name)
            for name, group in wanted
        ]
        hosts = [self._wait_until_booted(container) for container in containers]
        self._write_state(hosts)
        return hosts

    def _containers(self, kind: str | None = None) -> list[Container]:
        selector = [f"{SANDBOX_LABEL}={LABEL_VALUE}"]
        if kind:
            selector.append(f"{SANDBOX_LABEL}.kind={kind}")
        return self.docker.containers.list(all=True, filters={"label": selector})

    def _ensure_registry(self, network: str) -> None:
        """The registry, configured with this sandbox's certificate and password. A
        registry made for other ones (the CA or the password changed) is made again; its
        volume, the images, stays."""
        name = PREFIX + REGISTRY_ALIAS
        password = read_secret(SECRETS_FILE, "REGISTRY_PASSWORD")
        wanted = _registry_config_id(password)
        try:
            container = self.docker.containers.get(name)
        except docker.errors.NotFound:
            container = None
        if container is not None and container.labels.get(f"{SANDBOX_LABEL}.config") != wanted:
            log.info("recreating %s (its certificate or password changed)", name)
            container.remove(force=True, v=False)
            container = None
        if container is None:
            volume = self.docker.volumes.create(PREFIX + "registry-data", labels=labels())
            container = self.docker.containers.create(
                REGISTRY_IMAGE,
                name=name,
                labels=labels(kind="registry", config=wanted),
                network=network,
                networking_config={network: EndpointConfig("1.41", aliases=[REGISTRY_ALIAS])},
                ports={f"{REGISTRY_PORT}/tcp": ("127.0.0.1", REGISTRY_PUBLISHED_PORT)},
                volumes={volume.name: {"bind": "/var/lib/docker-registry", "mode": "rw"}},
                restart_policy={"Name": "unless-stopped"},
            )
            # Its key and htpasswd file belong to the user the registry runs as, 0600.
            uid, gid = _user_ids(container, "docker-registry")
            container.put_archive("/etc/docker/registry", _registry_files_tar(password, uid, gid))
        if container.status != "running":
            container.start()

    def _ensure_host(
        self, name: str, group: str, release: str, public_key: str, network: str
    ) -> Container:
        container_name = PREFIX + name
        try:
            container = self.docker.containers.get(container_name)
        except docker.errors.NotFound:
            return self._create_host(name, group, release, public_key, network)
        reason = None
        if container.labels.get(f"{SANDBOX_LABEL}.key") != key_id(public_key):
            # Created for another key (another clone's .sandbox, or a key deleted since):
            # nothing here could log in to it, so it starts again as a fresh host.
            reason = "it trusts another sandbox key"
        elif container.labels.get(f"{SANDBOX_LABEL}.release", "bookworm") != release:
            # A host's release is chosen when it is installed, as on a real VM.
            reason = f"it runs {container.labels.get(f'{SANDBOX_LABEL}.release', 'bookworm')}"
            reason += f", {release} is wanted"
        if reason:
            log.info("recreating %s (%s)", container_name, reason)
            self._remove_host(container, name)
            return self._create_host(name, group, release, public_key, network)
        if container.status != "running":
            container.start()
        return container

    def _remove_host(self, container: Container, name: str) -> None:
        container.remove(force=True, v=False)
        # Its Docker volume too: a host added back later must start fresh.
        this_host = [f"{SANDBOX_LABEL}={LABEL_VALUE}", f"{SANDBOX_LABEL}.host={name}"]
        for volume in self.docker.volumes.list(filters={"label": this_host}):
            volume.remove(force=True)

    def _create_host(
        self, name: str, group: str, release: str, public_key: str, network: str
    ) -> Container:
        volume = self.docker.volumes.create(f"{PREFIX}{name}-docker", labels=labels(host=name))
        options = dict(
            name=PREFIX + name,
            hostname=name,
            labels=labels(
                kind="host", host=name, group=group, key=key_id(public_key), release=release
            ),
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
        container = self.docker.containers.create(
            host_image(release), **options, **self._privileges()
        )
        container.put_archive("/root", _authorized_keys_tar(public_key))
        try:
            container.start()
        except docker.errors.APIError as error:
            if not self._privileged:
                raise
            log.info("--privileged is refused here (%s); using explicit capabilities", error)
            container.remove(force=True)
            self._privileged = False
            container = self.docker.containers.create(
                host_image(release), **options, **self._privileges()
            )
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
        _make_like_a_vm(container)
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
            release=container.labels.get(f"{SANDBOX_LABEL}.release", "bookworm"),
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
            "fleet_ca": [str(path) for path in FLEET_CA_FILES],
            "registry": {
                "from_hosts": f"{REGISTRY_ALIAS}:{REGISTRY_PORT}",
                "from_here": f"127.0.0.1:{REGISTRY_PUBLISHED_PORT}",
                "ca_file": str(CA_CERTIFICATE_FILE),
                "username": REGISTRY_USER,
            },
            "container_prefix": PREFIX,
            "hosts": [asdict(host) for host in hosts],
        }
        STATE_FILE.write_text(json.dumps(state, indent=2) + "\n")

    # -- the remote syslog receiver ---------------------------------------------------

    def syslog_receiver(self, certificate: bytes, key: bytes) -> Container:
        """(Re)create the TLS syslog receiver, reachable from the hosts as
        SYSLOG_RECEIVER_ALIAS:SYSLOG_RECEIVER_PORT, presenting `certificate`; what it
        receives is in SYSLOG_RECEIVED inside it, one message per line."""
        folder = STATE_DIR / "syslog-receiver"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "tls.crt").write_bytes(certificate)
        private = folder / "tls.key"
        private.touch(mode=0o600)
        private.write_bytes(key)
        self.remove_syslog_receiver()
        program = Path(__file__).resolve().parent / "syslog_receiver.py"
        container = self.docker.containers.run(
            BASE_IMAGE,
            ["python3", "/receiver.py", "/tls/tls.crt", "/tls/tls.key", SYSLOG_RECEIVED],
            name=PREFIX + "syslog",
            detach=True,
            labels=labels(kind="syslog"),
            network=NETWORK,
            networking_config={NETWORK: EndpointConfig("1.41", aliases=[SYSLOG_RECEIVER_ALIAS])},
            volumes={
                str(program): {"bind": "/receiver.py", "mode": "ro"},
                str(folder): {"bind": "/tls", "mode": "ro"},
            },
        )
        deadline = time.monotonic() + 30
        while b"listening" not in container.logs():
            container.reload()
            if container.status == "exited" or time.monotonic() > deadline:
                raise RuntimeError(f"syslog receiver did not start: {container.logs()!r}")
            time.sleep(0.1)
        return container

    def remove_syslog_receiver(self) -> None:
        for container in self._containers(kind="syslog"):
            container.remove(force=True)

    # -- inspection and removal -------------------------------------------------------

    def status(self) -> list[tuple[str, str]]:
        return [(c.name, c.status) for c in self._containers()]

    def host_container(self, name: str) -> Container:
        return self.docker.containers.get(PREFIX + name)

    def down(self) -> None:
        """Remove every container, volume and network labelled as the sandbox's."""
        selector = {"label": [f"{SANDBOX_LABEL}={LABEL_VALUE}"]}
        for container in self.docker.containers.list(all=True, filters=selector):
            log.info("removing container %s", container.name)
            container.remove(force=True, v=True)
        for volume in self.docker.volumes.list(filters=selector):
            log.info("removing volume %s", volume.name)
            volume.remove(force=True)
        for network in self.docker.networks.list(filters=selector):
            log.info("removing network %s", network.name)
            network.remove()
        if _state_file_instance_prefix() not in (None, PREFIX):
            # This work tree's state describes another instance, whose hosts still run:
            # a `down` of this one must not strand them (the tests read that file).
            log.info("keeping %s: it describes another sandbox instance", STATE_FILE)
        else:
            for path in (STATE_FILE, KNOWN_HOSTS_FILE):
                path.unlink(missing_ok=True)
        _forget_registry_here()


def _state_file_instance_prefix() -> str | None:
    """The container prefix the work tree's cluster.json was written for, if readable."""
    try:
        return json.loads(STATE_FILE.read_text()).get("container_prefix")
    except (OSError, ValueError, AttributeError):
        return None


def _registry_config_id(password: str) -> str:
    """Which configuration a registry container was made with (a label on it)."""
    digest = hashlib.sha256()
    for part in (
        REGISTRY_CONFIG.read_bytes(),
        REGISTRY_CERTIFICATE_FILE.read_bytes(),
        REGISTRY_KEY_FILE.read_bytes(),
        REGISTRY_USER.encode(),
        password.encode(),
    ):
        digest.update(hashlib.sha256(part).digest())
    return digest.hexdigest()[:16]


def _user_ids(container: Container, user: str) -> tuple[int, int]:
    """uid and gid of `user` in a created (not yet started) container's /etc/passwd."""
    stream, _ = container.get_archive("/etc/passwd")
    with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as archive:
        member = archive.extractfile("passwd")
        assert member is not None
        passwd = member.read().decode()
    for line in passwd.splitlines():
        fields = line.split(":")
        if fields[0] == user:
            return int(fields[2]), int(fields[3])
    raise SystemExit(f"sandbox: the registry image has no user {user}")


def htpasswd_line(user: str, password: str) -> str:
    """An htpasswd entry with a bcrypt hash, the only kind distribution accepts."""
    hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=10)).decode()
    return f"{user}:{hashed}\n"


def _registry_files_tar(password: str, uid: int, gid: int) -> bytes:
    files = [
        ("config.yml", REGISTRY_CONFIG.read_bytes(), 0o644, 0, 0),
        ("tls/registry.crt", REGISTRY_CERTIFICATE_FILE.read_bytes(), 0o644, 0, 0),
        ("tls/registry.key", REGISTRY_KEY_FILE.read_bytes(), 0o600, uid, gid),
        ("htpasswd", htpasswd_line(REGISTRY_USER, password).encode(), 0o600, uid, gid),
    ]
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        folder = tarfile.TarInfo("tls")
        folder.type, folder.mode = tarfile.DIRTYPE, 0o755
        archive.addfile(folder)
        for name, data, mode, owner, group in files:
            entry = tarfile.TarInfo(name)
            entry.mode, entry.size, entry.uid, entry.gid = mode, len(data), owner, group
            archive.addfile(entry, io.BytesIO(data))
    return buffer.getvalue()


def _registry_url() -> str:
    return f"https://127.0.0.1:{REGISTRY_PUBLISHED_PORT}/v2/"


def _wait_for_registry() -> None:
    """Until the registry answers HTTPS, verified against the sandbox's CA, with a 401
    (it asks for credentials, as configured)."""
    context = ssl.create_default_context(cafile=str(CA_CERTIFICATE_FILE))
    deadline = time.monotonic() + REGISTRY_READY_TIMEOUT
    last = ""
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(_registry_url(), context=context, timeout=3).close()
            raise SystemExit(f"sandbox: the registry answers {_registry_url()} without a password")
        except urllib.error.HTTPError as error:
            if error.code == 401:
                return
            last = f"HTTP {error.code}"
        except (urllib.error.URLError, OSError) as error:
            last = str(getattr(error, "reason", error))
        time.sleep(0.3)
    raise SystemExit(f"sandbox: the registry does not answer at {_registry_url()} ({last})")


def _here_certs_dir() -> Path:
    return DOCKER_CERTS_DIR / f"127.0.0.1:{REGISTRY_PUBLISHED_PORT}"


def _trust_registry_here() -> None:
    """Give this machine's Docker engine the sandbox CA for the registry's published
    address, where `make images` pushes: /etc/docker/certs.d/127.0.0.1:PORT/ca.crt.

    The engine reads that folder at each push, so nothing restarts, and only this
    instance's own port's folder is touched: the engine serves other sandboxes too.
    (dockerd counts 127.0.0.0/8 as an insecure registry by default and then skips the
    verification; the file is what makes the trust explicit, and what an engine without
    that default, or configured with `insecure-registries: []`, needs.)"""
    wanted = CA_CERTIFICATE_FILE.read_bytes()
    target = _here_certs_dir() / "ca.crt"
    try:
        if target.exists() and target.read_bytes() == wanted:
            return
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(wanted)
        target.chmod(0o644)
    except PermissionError:
        raise SystemExit(
            f"sandbox: cannot write {target}; as root: install -D -m 0644 "
            f"{CA_CERTIFICATE_FILE} {target}"
        ) from None


def _log_in_here() -> None:
    """`docker login` for the published address, the password on stdin: `make images`
    then pushes with the user's own Docker client configuration, as to a real registry."""
    password = read_secret(SECRETS_FILE, "REGISTRY_PASSWORD")
    address = f"127.0.0.1:{REGISTRY_PUBLISHED_PORT}"
    completed = subprocess.run(
        ["docker", "login", "--username", REGISTRY_USER, "--password-stdin", address],
        input=password,
        capture_output=True,
        text=True,
    )
    if completed.returncode != 0:
        raise SystemExit(f"sandbox: docker login {address} failed: {completed.stderr.strip()}")


def _forget_registry_here() -> None:
    """What up() left on this machine for this instance's registry only."""
    address = f"127.0.0.1:{REGISTRY_PUBLISHED_PORT}"
    subprocess.run(["docker", "logout", address], capture_output=True)
    shutil.rmtree(_here_certs_dir(), ignore_errors=True)


# What a Debian VM has that a container does not, set up in the host itself (so it
# survives its reboots) and only where missing:
# - the security suite in apt's sources, as Debian's installer writes it;
# - SSH host keys made at the first boot only (the image's ssh.service runs
#   `ssh-keygen -A` at every start, which would bring back keys hardening removed);
# - its own network stack's sysctls writable. Docker mounts /proc/sys read-only; a bind
#   of /proc/sys/net made writable reaches only this host's network namespace (net.*
#   keys are per namespace), while kernel-wide keys stay read-only: they belong to the
#   machine every sandbox shares.
VM_LIKE_UNIT = """[Unit]
Description=Sandbox: this host's own network sysctls are writable, as on a VM
DefaultDependencies=no
Before=systemd-sysctl.service

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/bin/sh -c 'mountpoint -q /proc/sys/net || mount --bind /proc/sys/net /proc/sys/net'
ExecStart=/bin/mount -o remount,bind,rw /proc/sys/net

[Install]
WantedBy=sysinit.target
"""
VM_LIKE_SCRIPT = f"""set -e
. /etc/os-release
if ! grep -rqs -- '-security' /etc/apt/sources.list /etc/apt/sources.list.d/; then
    echo "deb http://deb.debian.org/debian-security $VERSION_CODENAME-security main" \\
        > /etc/apt/sources.list.d/debian-security.list
fi
keys_once=/etc/systemd/system/ssh.service.d/20-sandbox-hostkeys-once.conf
if [ ! -e $keys_once ]; then
    mkdir -p /etc/systemd/system/ssh.service.d
    printf '%s\\n' '[Service]' 'ExecStartPre=' \\
        "ExecStartPre=/bin/sh -c 'ls /etc/ssh/ssh_host_*_key >/dev/null 2>&1 || ssh-keygen -A'" \\
        'ExecStartPre=/usr/sbin/sshd -t' > $keys_once
    systemctl daemon-reload
fi
unit=/etc/systemd/system/sandbox-netns-sysctl.service
if [ ! -e $unit ]; then
    cat > $unit <<'UNIT'
{VM_LIKE_UNIT}UNIT
    systemctl daemon-reload
    systemctl enable --now sandbox-netns-sysctl.service
fi
"""


def _make_like_a_vm(container: Container) -> None:
    result = container.exec_run(["sh", "-c", VM_LIKE_SCRIPT])
    if result.exit_code != 0:
        raise SystemExit(f"sandbox: setting up {container.name} failed: {result.output!r}")


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
