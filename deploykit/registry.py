"""Image registries as a Docker engine sees them: image references, the registry API's
authentication, and the question "does this tag exist, for these credentials?".

+ ``parse_reference`` reads an image the way ``docker pull`` does: ``nginx`` is
  ``docker.io/library/nginx``, ``acme/app`` is ``docker.io/acme/app``, and a first part
  with a dot, a port or ``localhost`` names the registry (``ghcr.io/acme/app``,
  ``registry:5000/deploykit/app``). Docker Hub's aliases all mean ``docker.io``, whose
  API is at ``registry-1.docker.io``.
+ ``parse_challenges`` reads ``WWW-Authenticate`` headers (RFC 7235), such as Docker
  Hub's ``Bearer realm="https://auth.docker.io/token",service="registry.docker.io"``.
+ ``check_manifest`` asks for the manifest with HEAD and answers a 401 the way the
  engine does (the distribution spec's token flow): Basic with the credentials, or a
  Bearer token fetched from the challenge's realm for ``scope=repository:NAME:pull``
  (anonymously when there are no credentials, as for public images). A manifest that
  exists comes with its digest (``Docker-Content-Digest``, else the SHA-256 of the
  manifest itself): what a roll pins every host to.

Standard library only, and runnable as a script (``python3 registry.py manifest ...``):
the planning-time check runs this very file on a web host, so that it asks with that
host's name resolution, network path and CA files (deploykit/registry_access.py).
"""

from __future__ import annotations

import argparse
import base64
import glob
import hashlib
import json
import os
import re
import socket
import ssl
import sys
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field

DOCKER_HUB = "docker.io"
DOCKER_HUB_API = "registry-1.docker.io"
DOCKER_HUB_ALIASES = {"docker.io", "index.docker.io", "registry-1.docker.io"}
# The key under which `docker login` (no server) stores Docker Hub's credentials.
DOCKER_HUB_CONFIG_KEY = "https://index.docker.io/v1/"
OFFICIAL_NAMESPACE = "library"

MANIFEST_TYPES = ", ".join(
    [
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.oci.image.index.v1+json",
    ]
)

# The grammar of github.com/distribution/reference (what `docker pull` accepts).
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_PATH = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*\Z")
_DOMAIN = re.compile(
    r"(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*"
    r"(?::[0-9]+)?\Z"
)
_TAG = re.compile(r"[\w][\w.-]{0,127}\Z")
_DIGEST = re.compile(r"[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-fA-F0-9]{32,}\Z")


@dataclass(frozen=True)
class ImageReference:
    """An image, normalised: ``registry`` is ``docker.io`` for Docker Hub, and Docker
    Hub's official images live under ``library/``."""

    registry: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    @property
    def api_host(self) -> str:
        """Where the registry API answers (Docker Hub's is not its name)."""
        return DOCKER_HUB_API if self.registry == DOCKER_HUB else self.registry

    @property
    def name(self) -> str:
        return f"{self.registry}/{self.repository}"

    def manifest_url(self, reference: str, insecure: bool = False) -> str:
        scheme = "http" if insecure else "https"
        return f"{scheme}://{self.api_host}/v2/{self.repository}/manifests/{reference}"

    def __str__(self) -> str:
        text = self.name
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text


def normalize_registry(registry: str) -> str:
    """``index.docker.io`` (and Docker Hub's other names) -> ``docker.io``."""
    return DOCKER_HUB if registry.lower() in DOCKER_HUB_ALIASES else registry


def config_key(registry: str) -> str:
    """The key ``docker login REGISTRY`` stores the credentials under in config.json."""
    registry = normalize_registry(registry)
    return DOCKER_HUB_CONFIG_KEY if registry == DOCKER_HUB else registry


def is_registry_name(text: str) -> bool:
    """A registry as ``docker login`` takes it: host, optional port."""
    return bool(_DOMAIN.match(text))


def parse_reference(text: str) -> ImageReference:
    """``[registry/]path[:tag][@digest]``, as Docker reads it; ValueError names the fault."""
    original = text
    if not text or text != text.strip():
        raise ValueError(f"image {original!r} is empty or has spaces around it")
    name, _, digest = text.partition("@")
    if digest and not _DIGEST.match(digest):
        raise ValueError(f"image {original!r}: {digest!r} is not a digest (algorithm:hex)")
    tag = None
    last_slash = name.rfind("/")
    colon = name.rfind(":")
    if colon > last_slash:
        name, tag = name[:colon], name[colon + 1 :]
        if not _TAG.match(tag):
            raise ValueError(f"image {original!r}: {tag!r} is not a valid tag")
    first, slash, rest = name.partition("/")
    # Docker's rule: the first part names a registry when it has a dot or a port, or is
    # localhost (and has no capital, which a registry host may have but a path may not).
    if slash and (("." in first or ":" in first or first == "localhost") or first != first.lower()):
        registry, path = first, rest
        if not _DOMAIN.match(registry):
            raise ValueError(f"image {original!r}: {registry!r} is not a registry host[:port]")
    else:
        registry, path = DOCKER_HUB, name
    registry = normalize_registry(registry)
    if registry == DOCKER_HUB and "/" not in path:
        path = f"{OFFICIAL_NAMESPACE}/{path}"
    if not _PATH.match(path):
        raise ValueError(
            f"image {original!r}: {path!r} is not a repository path "
            "(lowercase letters, digits, and . _ - between them, parts split by /)"
        )
    return ImageReference(registry, path, tag, digest or None)


# --- WWW-Authenticate --------------------------------------------------------------

_TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_SCHEME = re.compile(rf"\s*({_TOKEN})")
_PARAM = re.compile(rf'\s*({_TOKEN})\s*=\s*(?:"((?:[^"\\]|\\.)*)"|({_TOKEN}))')
_TOKEN68 = re.compile(r"\s*([A-Za-z0-9._~+/-]+=*)\s*(?:,|\Z)")


@dataclass(frozen=True)
class Challenge:
    """One challenge: its scheme (lowercase) and its parameters (names lowercase)."""

    scheme: str
    params: dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        shown = ",".join(f'{key}="{value}"' for key, value in self.params.items())
        return f"{self.scheme.capitalize()} {shown}".strip()


def parse_challenges(headers: list[str]) -> list[Challenge]:
    """Every challenge of one or more ``WWW-Authenticate`` values, in order."""
    challenges = []
    for header in headers:
        position = 0
        while position < len(header):
            while position < len(header) and header[position] in " \t,":
                position += 1
            match = _SCHEME.match(header, position)
            if not match:
                break
            scheme, position = match.group(1).lower(), match.end()
            params: dict[str, str] = {}
            token68 = _TOKEN68.match(header, position)
            if token68 and not _PARAM.match(header, position):
                params[""] = token68.group(1)
                position = token68.end()
            while True:
                param = _PARAM.match(header, position)
                if not param:
                    break
                quoted, plain = param.group(2), param.group(3)
                value = re.sub(r"\\(.)", r"\1", quoted) if quoted is not None else plain
                params[param.group(1).lower()] = value
                position = param.end()
                after = re.match(r"\s*,", header[position:])
                if not after:
                    break
                # A comma ends this parameter; a new challenge starts when what follows
                # is a scheme, not another name=value.
                if not _PARAM.match(header, position + after.end()):
                    position += after.end()
                    break
                position += after.end()
            challenges.append(Challenge(scheme, params))
    return challenges


def token_url(challenge: Challenge, repository: str) -> str:
    """The realm, asked for a token that may pull ``repository``."""
    realm = challenge.params.get("realm", "")
    query = {"scope": f"repository:{repository}:pull"}
    if challenge.params.get("service"):
        query = {"service": challenge.params["service"], **query}
    separator = "&" if urllib.parse.urlsplit(realm).query else "?"
    return realm + separator + urllib.parse.urlencode(query)


# --- asking the registry -----------------------------------------------------------


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str = field(repr=False)

    def basic(self) -> str:
        pair = f"{self.username}:{self.password}".encode()
        return "Basic " + base64.b64encode(pair).decode()


@dataclass(frozen=True)
class ManifestAnswer:
    """What the registry said about a tag.

    + outcome: ``present``, ``missing`` (404), ``denied`` (401/403 after authenticating
      or without credentials), ``unreachable`` (no HTTP answer), or ``unexpected``
    + status: the last HTTP status, or None
    + detail: what it answered, for a person (never a credential)
    + authenticated: whether credentials were sent
    + digest: the manifest's digest (``sha256:...``) when it is ``present``
    """

    outcome: str
    status: int | None
    detail: str
    authenticated: bool = False
    digest: str | None = None

    def to_json(self) -> str:
        return json.dumps(self.__dict__)

    @classmethod
    def from_json(cls, text: str) -> "ManifestAnswer":
        return cls(**json.loads(text))


class _Response:
    def __init__(self, status: int, headers, body: bytes):
        self.status, self.headers, self.body = status, headers, body

    def challenges(self) -> list[Challenge]:
        return parse_challenges(self.headers.get_all("WWW-Authenticate") or [])


class _SameHostRedirects(urllib.request.HTTPRedirectHandler):
    """Follow redirects, but carry the Authorization header only to the same host:
    a token or password for the registry is no business of a CDN's."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if new is not None and urllib.parse.urlsplit(newurl).netloc != req.host:
            new.remove_header("Authorization")
        return new


def tls_context(ca_files: list[str]) -> ssl.SSLContext:
    """The system's trusted CAs plus ``ca_files``, as the engine adds certs.d's."""
    context = ssl.create_default_context()
    for path in ca_files:
        context.load_verify_locations(cafile=path)
    return context


def certs_d_files(certs_dir: str, registry: str) -> list[str]:
    """The CA files Docker trusts for ``registry``: ``<certs_dir>/<host:port>/*.crt``."""
    return sorted(glob.glob(os.path.join(certs_dir, registry, "*.crt")))


class RegistryClient:
    """HTTP to one registry, with the engine's TLS trust and its way of authenticating."""

    def __init__(
        self,
        ca_files: list[str] | None = None,
        timeout: float = 10.0,
        context: ssl.SSLContext | None = None,
    ):
        self.timeout = timeout
        context = context or tls_context(list(ca_files or []))
        self.opener = urllib.request.build_opener(
            urllib.request.HTTPSHandler(context=context), _SameHostRedirects()
        )

    def request(self, method: str, url: str, headers: dict[str, str]) -> _Response:
        request = urllib.request.Request(url, method=method, headers=headers)
        try:
            with self.opener.open(request, timeout=self.timeout) as response:
                return _Response(response.status, response.headers, response.read())
        except urllib.error.HTTPError as error:
            with error:
                return _Response(error.code, error.headers, error.read())

    def check_manifest(
        self,
        image: ImageReference,
        reference: str,
        credentials: Credentials | None = None,
        insecure: bool = False,
    ) -> ManifestAnswer:
        """Does ``image:reference`` (a tag or a digest) exist, for these credentials,
        and what is its digest?"""
        url = image.manifest_url(reference, insecure)
        headers = {"Accept": MANIFEST_TYPES}
        try:
            response = self.request("HEAD", url, headers)
            authenticated = False
            if response.status == 401:
                challenges = response.challenges()
                authorization = self._authorization(challenges, image, credentials, insecure)
                if isinstance(authorization, ManifestAnswer):
                    return authorization
                headers = {**headers, "Authorization": authorization}
                authenticated = credentials is not None
                response = self.request("HEAD", url, headers)
                if response.status in (401, 403):
                    # HEAD has no body: ask again with GET for the registry's own words.
                    response = self.request("GET", url, headers)
            answer = _answer(response, authenticated)
            if answer.outcome == "present" and not answer.digest:
                # The header is optional in the spec: the digest is the manifest's own
                # SHA-256, as served for the same Accept header the engine sends.
                manifest = self.request("GET", url, headers)
                answer = _answer(manifest, authenticated, body_digest=True)
            if reference.startswith("sha256:") and answer.digest not in (None, reference):
                return ManifestAnswer(
                    "unexpected",
                    answer.status,
                    f"asked for {reference}, the registry answered {answer.digest}",
                    authenticated,
                )
            return answer
        except (urllib.error.URLError, OSError, ValueError) as error:
            return ManifestAnswer("unreachable", None, _network_error(error))

    def _authorization(self, challenges, image, credentials, insecure) -> str | ManifestAnswer:
        by_scheme = {challenge.scheme: challenge for challenge in challenges}
        if "bearer" in by_scheme:
            return self._bearer(by_scheme["bearer"], image, credentials, insecure)
        if "basic" in by_scheme:
            if credentials is None:
                return ManifestAnswer(
                    "denied", 401, f"HTTP 401, asking for credentials ({by_scheme['basic']})"
                )
            return credentials.basic()
        shown = "; ".join(str(c) for c in challenges) or "no WWW-Authenticate challenge"
        return ManifestAnswer("unexpected", 401, f"HTTP 401 with {shown}")

    def _bearer(self, challenge, image, credentials, insecure) -> str | ManifestAnswer:
        realm = challenge.params.get("realm", "")
        scheme = urllib.parse.urlsplit(realm).scheme
        if scheme not in ("https", "http") or (scheme == "http" and not insecure):
            return ManifestAnswer(
                "unexpected", 401, f"HTTP 401 with a token realm that is not HTTPS: {realm!r}"
            )
        headers = {"Authorization": credentials.basic()} if credentials else {}
        url = token_url(challenge, image.repository)
        response = self.request("GET", url, headers)
        where = urllib.parse.urlsplit(realm).netloc
        if response.status != 200:
            outcome = "denied" if response.status in (401, 403) else "unexpected"
            return ManifestAnswer(
                outcome,
                response.status,
                f"token service {where} answered HTTP {response.status}"
                + _error_words(response.body),
                authenticated=credentials is not None,
            )
        try:
            document = json.loads(response.body)
            token = document.get("token") or document.get("access_token")
        except (ValueError, AttributeError):
            token = None
        if not token:
            return ManifestAnswer(
                "unexpected", 200, f"token service {where} answered without a token"
            )
        return f"Bearer {token}"


def _answer(response: _Response, authenticated: bool, body_digest=False) -> ManifestAnswer:
    status = response.status
    if status == 200:
        digest = (response.headers.get("Docker-Content-Digest") or "").strip() or None
        if body_digest:
            digest = "sha256:" + hashlib.sha256(response.body).hexdigest()
        if digest and not _DIGEST.match(digest):
            return ManifestAnswer(
                "unexpected", status, f"HTTP 200 with a digest that is not one: {digest!r}"
            )
        return ManifestAnswer("present", status, "HTTP 200", authenticated, digest)
    if status == 404:
        return ManifestAnswer("missing", status, "HTTP 404", authenticated)
    words = _error_words(response.body)
    if status in (401, 403):
        challenge = "; ".join(str(c) for c in response.challenges())
        extra = f" ({challenge})" if challenge and not words else ""
        return ManifestAnswer("denied", status, f"HTTP {status}{words}{extra}", authenticated)
    return ManifestAnswer("unexpected", status, f"HTTP {status}{words}", authenticated)


def _error_words(body: bytes) -> str:
    """The registry's own words: the spec's {"errors": [{code, message}]}, or a token
    service's {"details": ...}; '' when the body says nothing readable."""
    try:
        document = json.loads(body.decode("utf-8", "replace"))
    except ValueError:
        return ""
    parts = []
    if isinstance(document, dict):
        for error in document.get("errors") or []:
            if isinstance(error, dict):
                parts.append(
                    " ".join(str(error.get(k)) for k in ("code", "message") if error.get(k))
                )
        for key in ("details", "detail", "error_description", "error", "message"):
            if isinstance(document.get(key), str) and not parts:
                parts.append(document[key])
    text = "; ".join(part for part in parts if part)[:300]
    return f": {text}" if text else ""


def _network_error(error: Exception) -> str:
    reason = getattr(error, "reason", error)
    if isinstance(reason, ssl.SSLCertVerificationError):
        return f"TLS: {reason.verify_message or reason} (is the registry's CA trusted?)"
    if isinstance(reason, socket.timeout):
        return "timed out"
    return f"{type(reason).__name__}: {reason}"


# --- command line (run on a host by the planning-time check) -----------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Ask a registry whether a tag exists.")
    commands = parser.add_subparsers(dest="command", required=True)
    manifest = commands.add_parser("manifest", help="print the answer as JSON")
    manifest.add_argument("image", help="repository, as in docker pull, without the tag")
    manifest.add_argument("reference", help="tag or digest")
    manifest.add_argument(
        "--auth-file", help='JSON {"username": ..., "password": ...} (never an argument)'
    )
    manifest.add_argument("--certs-dir", default="/etc/docker/certs.d")
    manifest.add_argument("--insecure", action="store_true", help="plain HTTP")
    manifest.add_argument("--timeout", type=float, default=10.0)
    args = parser.parse_args(argv)

    try:
        image = parse_reference(args.image)
    except ValueError as error:
        print(ManifestAnswer("unexpected", None, str(error)).to_json())
        return 0
    credentials = None
    if args.auth_file:
        with open(args.auth_file) as file:
            document = json.load(file)
        credentials = Credentials(document["username"], document["password"])
    client = RegistryClient(certs_d_files(args.certs_dir, image.api_host), timeout=args.timeout)
    print(client.check_manifest(image, args.reference, credentials, args.insecure).to_json())
    return 0


if __name__ == "__main__":
    sys.exit(main())
