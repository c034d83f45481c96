"""deploykit/registry.py: image references as Docker reads them, WWW-Authenticate
challenges, and the manifest check against stub registries on 127.0.0.1 that answer
as Docker Hub, GHCR and Debian's docker-registry (htpasswd) do, over real HTTPS."""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import ssl
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from deploykit.registry import (
    Challenge,
    Credentials,
    ImageReference,
    ManifestAnswer,
    RegistryClient,
    certs_d_files,
    config_key,
    parse_challenges,
    parse_reference,
    token_url,
)
from sandbox.tls import ensure_ca, ensure_signed_certificate

REGISTRY_PY = Path(__file__).resolve().parents[2] / "deploykit" / "registry.py"

# -- image references ------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, registry, repository, tag",
    [
        ("nginx", "docker.io", "library/nginx", None),
        ("nginx:1.27", "docker.io", "library/nginx", "1.27"),
        ("acme/app", "docker.io", "acme/app", None),
        ("acme/app:v2", "docker.io", "acme/app", "v2"),
        ("docker.io/nginx", "docker.io", "library/nginx", None),
        ("index.docker.io/library/nginx:1", "docker.io", "library/nginx", "1"),
        ("registry-1.docker.io/acme/app", "docker.io", "acme/app", None),
        ("ghcr.io/acme/app:1.2.3", "ghcr.io", "acme/app", "1.2.3"),
        ("registry:5000/deploykit/app", "registry:5000", "deploykit/app", None),
        ("127.0.0.1:5300/deploykit/nginx:1", "127.0.0.1:5300", "deploykit/nginx", "1"),
        ("localhost/app", "localhost", "app", None),
        ("localhost:5000/a/b/c", "localhost:5000", "a/b/c", None),
        ("Registry.Example.com/team/app", "Registry.Example.com", "team/app", None),
        ("quay.io/org/my_app-x.y", "quay.io", "org/my_app-x.y", None),
    ],
)
def test_references_read_as_docker_reads_them(text, registry, repository, tag):
    image = parse_reference(text)
    assert (image.registry, image.repository, image.tag) == (registry, repository, tag)


def test_docker_hub_is_asked_at_its_api_host_and_logged_in_under_its_index_key():
    image = parse_reference("nginx:1.27")
    assert image.api_host == "registry-1.docker.io"
    assert image.manifest_url("1.27") == (
        "https://registry-1.docker.io/v2/library/nginx/manifests/1.27"
    )
    assert str(image) == "docker.io/library/nginx:1.27"
    assert config_key("docker.io") == "https://index.docker.io/v1/"
    assert config_key("index.docker.io") == "https://index.docker.io/v1/"
    assert config_key("registry:5000") == "registry:5000"


def test_a_private_registry_is_asked_where_it_is_named():
    image = parse_reference("registry:5000/deploykit/app")
    assert image.manifest_url("v2") == "https://registry:5000/v2/deploykit/app/manifests/v2"
    assert image.manifest_url("v2", insecure=True).startswith("http://registry:5000/")


def test_digest_references():
    digest = "sha256:" + "ab" * 32
    image = parse_reference(f"ghcr.io/acme/app:v1@{digest}")
    assert (image.tag, image.digest) == ("v1", digest)
    assert str(image) == f"ghcr.io/acme/app:v1@{digest}"


@pytest.mark.parametrize(
    "text, culprit",
    [
        ("", "empty"),
        ("Acme/App", "'Acme/App'"),
        ("registry:5000/", "is not a repository path"),
        ("app:bad tag", "not a valid tag"),
        ("app@sha256:xyz", "not a digest"),
        (" nginx", "spaces"),
        ("registry:port/app", "not a registry host"),
    ],
)
def test_bad_references_are_refused_naming_the_fault(text, culprit):
    with pytest.raises(ValueError, match="image") as error:
        parse_reference(text)
    assert culprit in str(error.value)


# -- challenges --------------------------------------------------------------------------


def test_docker_hub_challenge():
    header = (
        'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",'
        'scope="repository:library/nginx:pull"'
    )
    assert parse_challenges([header]) == [
        Challenge(
            "bearer",
            {
                "realm": "https://auth.docker.io/token",
                "service": "registry.docker.io",
                "scope": "repository:library/nginx:pull",
            },
        )
    ]


def test_distribution_htpasswd_and_ecr_basic_challenges():
    assert parse_challenges(['Basic realm="deploykit-sandbox"']) == [
        Challenge("basic", {"realm": "deploykit-sandbox"})
    ]
    ecr = 'Basic realm="https://1.dkr.ecr.eu-west-1.amazonaws.com/",service="ecr.amazonaws.com"'
    assert parse_challenges([ecr])[0].params["service"] == "ecr.amazonaws.com"


def test_several_challenges_in_one_header_and_in_several():
    header = 'Basic realm="a, b", Bearer realm="https://t/token", service="s", error="x"'
    challenges = parse_challenges([header, "Negotiate abc123=="])
    assert [c.scheme for c in challenges] == ["basic", "bearer", "negotiate"]
    assert challenges[0].params == {"realm": "a, b"}
    assert challenges[1].params == {"realm": "https://t/token", "service": "s", "error": "x"}
    assert challenges[2].params == {"": "abc123=="}


def test_quoted_values_unescape_and_names_are_case_insensitive():
    [challenge] = parse_challenges(['BEARER Realm="https://x/t?a=\\"b\\"", Service=reg'])
    assert challenge == Challenge("bearer", {"realm": 'https://x/t?a="b"', "service": "reg"})


def test_token_url_asks_for_pull_of_the_repository():
    challenge = Challenge("bearer", {"realm": "https://auth.docker.io/token", "service": "r.d.io"})
    assert token_url(challenge, "library/nginx") == (
        "https://auth.docker.io/token?service=r.d.io&scope=repository%3Alibrary%2Fnginx%3Apull"
    )
    with_query = Challenge("bearer", {"realm": "https://h/oauth2/token?tenant=1"})
    assert token_url(with_query, "a/b") == (
        "https://h/oauth2/token?tenant=1&scope=repository%3Aa%2Fb%3Apull"
    )


def test_credentials_never_show_the_password():
    credentials = Credentials("deploykit", "s3cret-value")
    assert "s3cret-value" not in repr(credentials)
    assert credentials.basic() == "Basic " + base64.b64encode(b"deploykit:s3cret-value").decode()


# -- stub registries over HTTPS on 127.0.0.1 ----------------------------------------------

USER, PASSWORD = "deploykit", "right-password"
BASIC = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
UNAUTHORIZED = {
    "errors": [{"code": "UNAUTHORIZED", "message": "authentication required", "detail": None}]
}


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tls")
    ensure_ca(folder / "ca.crt", folder / "ca.key")
    ensure_signed_certificate(
        folder / "ca.crt",
        folder / "ca.key",
        folder / "server.crt",
        folder / "server.key",
        ["localhost"],
        ["127.0.0.1"],
    )
    return folder


class StubRegistry:
    """An HTTPS server on 127.0.0.1 answering with `route(stub, method, path, query,
    headers) -> (status, headers, body)`; every request is recorded."""

    def __init__(self, tls_files: Path, route):
        self.requests: list[dict] = []
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _serve(self):
                parts = urlsplit(self.path)
                request = {
                    "method": self.command,
                    "path": parts.path,
                    "query": {k: v[0] for k, v in parse_qs(parts.query).items()},
                    "headers": dict(self.headers.items()),
                }
                stub.requests.append(request)
                status, headers, body = route(stub, **request)
                data = json.dumps(body).encode() if body is not None else b""
                self.send_response(status)
                for name, value in headers:
                    self.send_header(name, value)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_HEAD = _serve

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(tls_files / "server.crt", tls_files / "server.key")
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        self.registry = f"127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def stub(tls_files):
    made = []

    def make(route):
        server = StubRegistry(tls_files, route)
        made.append(server)
        return server

    yield make
    for server in made:
        server.close()


def client(tls_files) -> RegistryClient:
    return RegistryClient([str(tls_files / "ca.crt")], timeout=5)


def htpasswd_registry(stub, method, path, query, headers):
    """Debian's docker-registry with auth: htpasswd: 401 + Basic realm, errors in JSON."""
    if headers.get("Authorization") != BASIC:
        return 401, [("WWW-Authenticate", 'Basic realm="deploykit-sandbox"')], UNAUTHORIZED
    if path == "/v2/deploykit/app/manifests/v1":
        return 200, [("Docker-Content-Digest", "sha256:" + "0" * 64)], {"schemaVersion": 2}
    unknown = {"errors": [{"code": "MANIFEST_UNKNOWN", "message": "manifest unknown"}]}
    return 404, [], unknown


def test_basic_registry_present_with_the_right_credentials(stub, tls_files):
    server = stub(htpasswd_registry)
    image = parse_reference(f"{server.registry}/deploykit/app")
    answer = client(tls_files).check_manifest(image, "v1", Credentials(USER, PASSWORD))
    assert answer == ManifestAnswer(
        "present", 200, "HTTP 200", authenticated=True, digest="sha256:" + "0" * 64
    )
    first, second = server.requests
    assert (first["method"], "Authorization" in first["headers"]) == ("HEAD", False)
    assert second["headers"]["Authorization"] == BASIC
    assert "manifest.v2+json" in second["headers"]["Accept"]


def test_basic_registry_missing_tag(stub, tls_files):
    server = stub(htpasswd_registry)
    image = parse_reference(f"{server.registry}/deploykit/app")
    answer = client(tls_files).check_manifest(image, "v9", Credentials(USER, PASSWORD))
    assert (answer.outcome, answer.status) == ("missing", 404)


def test_basic_registry_wrong_password_is_denied_with_the_registrys_words(stub, tls_files):
    server = stub(htpasswd_registry)
    image = parse_reference(f"{server.registry}/deploykit/app")
    answer = client(tls_files).check_manifest(image, "v1", Credentials(USER, "wrong"))
    assert answer == ManifestAnswer(
        "denied", 401, "HTTP 401: UNAUTHORIZED authentication required", authenticated=True
    )
    assert "wrong" not in answer.to_json()


def test_basic_registry_without_credentials_names_its_challenge(stub, tls_files):
    server = stub(htpasswd_registry)
    image = parse_reference(f"{server.registry}/deploykit/app")
    answer = client(tls_files).check_manifest(image, "v1", None)
    assert answer.outcome == "denied" and answer.status == 401
    assert 'Basic realm="deploykit-sandbox"' in answer.detail
    assert len(server.requests) == 1


HUB_MANIFEST = {
    "schemaVersion": 2,
    "mediaType": "application/vnd.oci.image.index.v1+json",
    "manifests": [],
}
# What the client must compute from the body when the header is missing.
HUB_MANIFEST_DIGEST = "sha256:" + hashlib.sha256(json.dumps(HUB_MANIFEST).encode()).hexdigest()


def hub_like(stub, method, path, query, headers):
    """Docker Hub's shape: the registry sends a Bearer challenge naming the token realm
    and service; the realm hands out tokens for the asked scope, anonymously for public
    (library/) images, with Basic credentials for private ones."""
    realm = f"https://127.0.0.1:{stub.port}/token"
    if path == "/token":
        scope = query.get("scope", "")
        if headers.get("Authorization") not in (None, BASIC):
            return 401, [], {"details": "incorrect username or password"}
        if headers.get("Authorization") is None and not scope.startswith("repository:library/"):
            return 200, [], {"token": "anonymous-token", "expires_in": 300}
        return 200, [], {"token": f"token-for {scope}", "expires_in": 300, "issued_at": "x"}
    repository = path.split("/manifests/")[0][len("/v2/") :]
    wanted = f"Bearer token-for repository:{repository}:pull"
    if headers.get("Authorization") != wanted:
        challenge = (
            f'Bearer realm="{realm}",service="registry.docker.io",'
            f'scope="repository:{repository}:pull"'
        )
        if headers.get("Authorization"):
            challenge += ',error="insufficient_scope"'
        body = {"errors": [{"code": "UNAUTHORIZED", "message": "authentication required"}]}
        return 401, [("WWW-Authenticate", challenge)], body
    if path.endswith("/manifests/1.27") or path.endswith("/manifests/v1"):
        # No Docker-Content-Digest header (the spec makes it optional).
        return 200, [], HUB_MANIFEST
    return 404, [], {"errors": [{"code": "MANIFEST_UNKNOWN", "message": "manifest unknown"}]}


def hub_image(server, name: str) -> ImageReference:
    """parse_reference's Docker Hub normalisation, pointed at the stub's address."""
    image = parse_reference(name)
    assert image.registry == "docker.io"
    return ImageReference(server.registry, image.repository)


def test_bearer_public_official_image_anonymously(stub, tls_files):
    server = stub(hub_like)
    image = hub_image(server, "nginx")
    answer = client(tls_files).check_manifest(image, "1.27", None)
    assert answer == ManifestAnswer(
        "present", 200, "HTTP 200", authenticated=False, digest=HUB_MANIFEST_DIGEST
    )
    # Without the header, the digest is the SHA-256 of the manifest, fetched with GET
    # and the same token and Accept header.
    last = server.requests[-1]
    assert last["method"] == "GET" and last["path"] == "/v2/library/nginx/manifests/1.27"
    assert last["headers"]["Authorization"].startswith("Bearer ")
    assert "image.index.v1+json" in last["headers"]["Accept"]
    token_request = server.requests[1]
    assert token_request["path"] == "/token"
    assert token_request["query"] == {
        "service": "registry.docker.io",
        "scope": "repository:library/nginx:pull",
    }
    assert "Authorization" not in token_request["headers"]
    assert server.requests[2]["headers"]["Authorization"] == (
        "Bearer token-for repository:library/nginx:pull"
    )
    assert server.requests[2]["path"] == "/v2/library/nginx/manifests/1.27"


def test_bearer_private_image_with_credentials(stub, tls_files):
    server = stub(hub_like)
    image = hub_image(server, "acme/app")
    answer = client(tls_files).check_manifest(image, "v1", Credentials(USER, PASSWORD))
    assert answer.outcome == "present"
    assert server.requests[1]["headers"]["Authorization"] == BASIC
    assert server.requests[1]["query"]["scope"] == "repository:acme/app:pull"


def test_bearer_wrong_password_is_refused_by_the_token_service(stub, tls_files):
    server = stub(hub_like)
    image = hub_image(server, "acme/app")
    answer = client(tls_files).check_manifest(image, "v1", Credentials(USER, "nope"))
    assert answer == ManifestAnswer(
        "denied",
        401,
        f"token service 127.0.0.1:{server.port} answered HTTP 401: incorrect username or password",
        authenticated=True,
    )
    assert [r["path"] for r in server.requests] == ["/v2/acme/app/manifests/v1", "/token"]


def test_bearer_private_image_without_credentials_is_denied(stub, tls_files):
    server = stub(hub_like)
    answer = client(tls_files).check_manifest(hub_image(server, "acme/app"), "v1", None)
    assert answer.outcome == "denied" and answer.status == 401
    assert answer.detail == "HTTP 401: UNAUTHORIZED authentication required"
    assert not answer.authenticated


def test_bearer_missing_tag(stub, tls_files):
    server = stub(hub_like)
    answer = client(tls_files).check_manifest(hub_image(server, "nginx"), "0.0.0-none", None)
    assert (answer.outcome, answer.status) == ("missing", 404)


def ghcr_like(stub, method, path, query, headers):
    """GHCR's shape: the token comes as access_token too; a token without access to the
    package gets 403 DENIED on the manifest."""
    if path == "/token":
        granted = headers.get("Authorization") == BASIC
        token = "granted" if granted else "anonymous"
        return 200, [], {"token": token, "access_token": token}
    if headers.get("Authorization") == "Bearer granted":
        return 200, [], None
    if headers.get("Authorization") == "Bearer anonymous":
        message = "requested access to the resource is denied"
        return 403, [], {"errors": [{"code": "DENIED", "message": message}]}
    challenge = (
        f'Bearer realm="https://127.0.0.1:{stub.port}/token",service="ghcr.io",'
        'scope="repository:acme/app:pull"'
    )
    return 401, [("WWW-Authenticate", challenge)], UNAUTHORIZED


def test_ghcr_like_denied_without_credentials_present_with_them(stub, tls_files):
    server = stub(ghcr_like)
    image = parse_reference(f"{server.registry}/acme/app")
    denied = client(tls_files).check_manifest(image, "v1", None)
    assert denied == ManifestAnswer(
        "denied", 403, "HTTP 403: DENIED requested access to the resource is denied"
    )
    present = client(tls_files).check_manifest(image, "v1", Credentials(USER, PASSWORD))
    assert present.outcome == "present"


def test_access_token_field_is_accepted(stub, tls_files):
    def acr_like(stub, method, path, query, headers):
        if path == "/token":
            return 200, [], {"access_token": "acr"}
        if headers.get("Authorization") == "Bearer acr":
            return 200, [], None
        realm = f"https://127.0.0.1:{stub.port}/token"
        return 401, [("WWW-Authenticate", f'Bearer realm="{realm}",service="x.azurecr.io"')], None

    server = stub(acr_like)
    image = parse_reference(f"{server.registry}/team/app")
    assert client(tls_files).check_manifest(image, "v1", Credentials(USER, PASSWORD)).outcome == (
        "present"
    )


def test_a_plain_http_token_realm_is_refused_for_an_https_registry(stub, tls_files):
    def leaky(stub, method, path, query, headers):
        return 401, [("WWW-Authenticate", 'Bearer realm="http://evil.example/token"')], None

    server = stub(leaky)
    answer = client(tls_files).check_manifest(
        parse_reference(f"{server.registry}/a/b"), "v1", Credentials(USER, PASSWORD)
    )
    assert answer.outcome == "unexpected" and "not HTTPS" in answer.detail
    assert len(server.requests) == 1


def test_a_redirect_to_another_host_does_not_carry_the_authorization(stub, tls_files):
    def redirecting(stub, method, path, query, headers):
        if path.startswith("/blobs-elsewhere"):
            return 200, [], None
        if headers.get("Authorization") != BASIC:
            return 401, [("WWW-Authenticate", 'Basic realm="r"')], None
        return 307, [("Location", f"https://localhost:{stub.port}/blobs-elsewhere")], None

    server = stub(redirecting)
    image = parse_reference(f"{server.registry}/a/b")
    answer = client(tls_files).check_manifest(image, "v1", Credentials(USER, PASSWORD))
    assert answer.outcome == "present"
    assert server.requests[-1]["path"] == "/blobs-elsewhere"
    assert "Authorization" not in server.requests[-1]["headers"]


def test_an_untrusted_certificate_is_reported_as_such(stub, tls_files):
    server = stub(htpasswd_registry)
    image = parse_reference(f"{server.registry}/deploykit/app")
    answer = RegistryClient([], timeout=5).check_manifest(image, "v1", Credentials(USER, PASSWORD))
    assert answer.outcome == "unreachable" and answer.status is None
    assert answer.detail.startswith("TLS: ") and "CA" in answer.detail
    assert server.requests == []


def test_nothing_listening_is_unreachable(tls_files):
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    image = parse_reference(f"127.0.0.1:{port}/a/b")
    answer = client(tls_files).check_manifest(image, "v1", None)
    assert answer.outcome == "unreachable" and "Connection refused" in answer.detail


def test_certs_d_files_are_the_registrys_crt_files(tmp_path):
    folder = tmp_path / "registry:5000"
    folder.mkdir()
    for name in ("ca.crt", "other.crt", "client.cert", "client.key"):
        (folder / name).write_text("x")
    assert [Path(p).name for p in certs_d_files(str(tmp_path), "registry:5000")] == [
        "ca.crt",
        "other.crt",
    ]
    assert certs_d_files(str(tmp_path), "ghcr.io") == []


def test_the_script_runs_with_the_system_python_alone_as_on_a_host(stub, tls_files, tmp_path):
    """What the planning check runs on a web host: this file, no package around it, the
    credentials in a file, the CA from a certs.d folder."""
    python = shutil.which("python3", path="/usr/bin:/bin")
    server = stub(htpasswd_registry)
    certs = tmp_path / "certs.d" / server.registry
    certs.mkdir(parents=True)
    shutil.copy(tls_files / "ca.crt", certs / "ca.crt")
    alone = tmp_path / "registry.py"
    shutil.copy(REGISTRY_PY, alone)
    auth = tmp_path / "auth.json"
    auth.write_text(json.dumps({"username": USER, "password": PASSWORD}))
    command = [python, str(alone), "manifest", f"{server.registry}/deploykit/app", "v1"]
    command += ["--auth-file", str(auth), "--certs-dir", str(tmp_path / "certs.d")]
    completed = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert completed.returncode == 0, completed.stderr
    assert ManifestAnswer.from_json(completed.stdout).outcome == "present"
    assert PASSWORD not in " ".join(command)


def test_the_sandbox_ca_passes_strict_verification_as_python_313_does_by_default(stub, tls_files):
    """Trixie hosts run the check with Python 3.13, whose default context adds
    VERIFY_X509_STRICT: the sandbox CA and its certificates must pass it."""
    server = stub(htpasswd_registry)
    context = ssl.create_default_context(cafile=str(tls_files / "ca.crt"))
    context.verify_flags |= ssl.VERIFY_X509_STRICT
    image = parse_reference(f"{server.registry}/deploykit/app")
    answer = RegistryClient(context=context, timeout=5).check_manifest(
        image, "v1", Credentials(USER, PASSWORD)
    )
    assert answer.outcome == "present", answer


def test_a_digest_asked_for_must_be_the_digest_answered(stub, tls_files):
    """Asking by digest (a rollback's exact release): a registry answering another
    digest is not believed."""
    wanted = "sha256:" + "1" * 64

    def lying(stub, method, path, query, headers):
        return 200, [("Docker-Content-Digest", "sha256:" + "2" * 64)], {"schemaVersion": 2}

    server = stub(lying)
    image = parse_reference(f"{server.registry}/deploykit/app")
    answer = client(tls_files).check_manifest(image, wanted, None)
    assert answer.outcome == "unexpected"
    assert wanted in answer.detail and "sha256:" + "2" * 64 in answer.detail


def test_a_digest_header_that_is_no_digest_is_refused(stub, tls_files):
    def odd(stub, method, path, query, headers):
        return 200, [("Docker-Content-Digest", "latest")], {"schemaVersion": 2}

    server = stub(odd)
    image = parse_reference(f"{server.registry}/deploykit/app")
    answer = client(tls_files).check_manifest(image, "v1", None)
    assert (answer.outcome, answer.digest) == ("unexpected", None)
    assert "'latest'" in answer.detail


def test_the_answer_keeps_its_digest_through_json():
    answer = ManifestAnswer("present", 200, "HTTP 200", True, "sha256:" + "a" * 64)
    assert ManifestAnswer.from_json(answer.to_json()) == answer
