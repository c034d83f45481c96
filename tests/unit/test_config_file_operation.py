import hashlib

from deploykit.operations import config_file as config_file_module
from deploykit.operations.config_file import config_file, mask_secrets, render_template
from tests.unit.fakes import FakeHost, command_texts, run_operation

CONTENT = "PermitRootLogin no\n"
SHA1 = hashlib.sha1(CONTENT.encode()).hexdigest()
DEST = "/etc/ssh/sshd_config.d/10-deploykit-hardening.conf"


def remote_file(mode=644, user="root", group="root"):
    return {DEST: {"mode": mode, "user": user, "group": group}}


def test_new_file_is_staged_validated_then_renamed(monkeypatch):
    monkeypatch.setattr(config_file_module.random, "token_hex", lambda n: "r" * (2 * n))
    host = FakeHost(facts={"File": {DEST: None}, "Sha1File": {DEST: None}})
    commands = run_operation(
        config_file, host, content=CONTENT, dest=DEST, validate="sshd -t -f {path}"
    )
    staged = DEST + ".deploykit-new"
    upload = "upload-" + "r" * 32
    assert command_texts(commands) == [
        "umask 022 && mkdir -p /etc/ssh/sshd_config.d",
        f"install -m 644 -o root -g root /dev/null {staged}",
        "install -d -m 0700 -o root /var/lib/deploykit-upload",
        f"upload {staged} via /var/lib/deploykit-upload/{upload}",
        f"sshd -t -f {staged} || {{ status=$?; rm -f {staged}; echo 'deploykit: {DEST} failed"
        " validation; the live file is unchanged' >&2; exit $status; }",
        f"mv -f {staged} {DEST}",
    ]


def test_a_private_file_is_never_readable_by_others_while_it_is_uploaded():
    host = FakeHost(
        facts={"File": {DEST: None}, "Sha1File": {DEST: None}}, data={"ssh_user": "deploy"}
    )
    texts = command_texts(
        run_operation(
            config_file, host, content=CONTENT, dest=DEST, mode=0o600, user="deploy", group="app"
        )
    )
    # Owner and mode first, on the empty staged file; the upload waits in deploy's own
    # 0700 folder, not in /tmp.
    assert texts[1] == f"install -m 600 -o deploy -g app /dev/null {DEST}.deploykit-new"
    assert texts[2] == "install -d -m 0700 -o deploy /var/lib/deploykit-upload"
    assert texts[3].startswith(f"upload {DEST}.deploykit-new via /var/lib/deploykit-upload/")


def test_same_content_and_mode_is_a_noop():
    host = FakeHost(facts={"File": remote_file(), "Sha1File": {DEST: SHA1}})
    assert run_operation(config_file, host, content=CONTENT, dest=DEST) == []
    assert host.noop_reason == f"{DEST} is up to date"


def test_same_content_wrong_mode_only_fixes_the_mode():
    host = FakeHost(facts={"File": remote_file(mode=600), "Sha1File": {DEST: SHA1}})
    commands = run_operation(config_file, host, content=CONTENT, dest=DEST, mode=0o644)
    assert command_texts(commands) == [f"chmod 644 {DEST}"]


def test_same_content_wrong_owner_only_fixes_the_owner():
    host = FakeHost(facts={"File": remote_file(user="deploy"), "Sha1File": {DEST: SHA1}})
    commands = run_operation(config_file, host, content=CONTENT, dest=DEST)
    assert command_texts(commands) == [f"chown root:root {DEST}"]


def test_changed_content_without_validation_skips_the_check():
    host = FakeHost(facts={"File": remote_file(), "Sha1File": {DEST: "0" * 40}})
    texts = command_texts(run_operation(config_file, host, content=CONTENT, dest=DEST))
    assert texts[-1] == f"mv -f {DEST}.deploykit-new {DEST}"
    assert not any("failed validation" in text for text in texts)


def test_paths_with_spaces_are_quoted():
    dest = "/etc/odd dir/app.conf"
    host = FakeHost(facts={"File": {dest: None}, "Sha1File": {dest: None}})
    texts = command_texts(
        run_operation(config_file, host, content=CONTENT, dest=dest, validate="check {path}")
    )
    assert texts[0] == "umask 022 && mkdir -p '/etc/odd dir'"
    assert texts[-1] == "mv -f '/etc/odd dir/app.conf.deploykit-new' '/etc/odd dir/app.conf'"
    assert texts[-2].startswith("check '/etc/odd dir/app.conf.deploykit-new' || ")


def test_mask_secrets_hides_longest_first():
    assert mask_secrets("url=postgres://u:s3cret@db password=s3cret", ["s3cret"]) == (
        "url=postgres://u:********@db password=********"
    )
    assert mask_secrets("abc", ["", "b"]) == "a********c"


def test_render_template_fails_on_missing_variable():
    import jinja2
    import pytest

    with pytest.raises(jinja2.UndefinedError):
        render_template("sudoers-deploy.j2")
    assert render_template("sudoers-deploy.j2", user="deploy").endswith(
        "deploy ALL=(ALL:ALL) NOPASSWD: ALL\n"
    )


def test_diff_masks_new_and_replaced_secrets(caplog):
    from deploykit.operations.config_file import config_file as operation
    from tests.unit.fakes import fake_context

    dest = "/etc/deploykit/app.env"
    old = ["A=1", "PASSWORD=old-pw", "URL=pg://u:old-pw@db", "KEY=same-key"]
    new = "A=2\nPASSWORD=new-pw\nURL=pg://u:new-pw@db\nKEY=same-key\n"
    host = FakeHost(
        facts={
            "File": {dest: {"mode": 600, "user": "deploy", "group": "deploy"}},
            "Sha1File": {dest: "0" * 40},
            "FileContents": {dest: old},
        }
    )
    caplog.set_level("INFO")
    with fake_context(host, diff=True):
        list(
            operation._inner(
                content=new,
                dest=dest,
                secrets=["new-pw", "same-key"],
                old_secrets=lambda text: [
                    line.split("=", 1)[1] for line in text.splitlines() if "PASSWORD" in line
                ],
            )
        )
    shown = "\n".join(record.getMessage() for record in caplog.records)
    for secret in ("old-pw", "new-pw", "same-key"):
        assert secret not in shown
    assert "- PASSWORD=********(old)" in shown
    assert "+ PASSWORD=********" in shown
    assert "- URL=pg://u:********(old)@db" in shown
    # An unchanged secret masks the same on both sides: no diff line for it.
    assert "KEY=********" in shown and "- KEY" not in shown


def test_the_staged_uploads_name_is_random_not_derived_from_the_content():
    # The name shows in sudo's log (forwarded to the log host): a digest of a secret
    # file there would let a reader test guesses of the secret.
    def upload_names(content: str) -> list[str]:
        host = FakeHost(facts={"File": {DEST: None}, "Sha1File": {DEST: None}})
        texts = command_texts(run_operation(config_file, host, content=content, dest=DEST))
        return [text.rsplit("/", 1)[1] for text in texts if text.startswith("upload ")]

    first, again = upload_names("PASSWORD=hunter2\n"), upload_names("PASSWORD=hunter2\n")
    assert first != again
    for name in first + again:
        assert len(name) == len("upload-") + 32 and name.startswith("upload-")
        for digest in (hashlib.sha1, hashlib.sha256, hashlib.md5):
            for text in ("PASSWORD=hunter2\n", f"{DEST}.deploykit-new\0PASSWORD=hunter2\n"):
                assert digest(text.encode()).hexdigest()[:16] not in name


RSA_KEY = (
    "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA0old+line/one\nold/line+two==\n"
    "-----END RSA PRIVATE KEY-----\n"
)
NEW_KEY = (
    "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANnew+line/one\nnew/line+two==\n"
    "-----END PRIVATE KEY-----\n"
)
CERT = "-----BEGIN CERTIFICATE-----\nMIIDcert+line\n-----END CERTIFICATE-----\n"


def diff_shown(caplog, dest: str, old_lines: list[str], new: str, **arguments) -> str:
    from tests.unit.fakes import fake_context

    host = FakeHost(
        facts={
            "File": {dest: {"mode": 600, "user": "root", "group": "root"}},
            "Sha1File": {dest: "0" * 40},
            "FileContents": {dest: old_lines},
        }
    )
    caplog.clear()
    caplog.set_level("INFO")
    with fake_context(host, diff=True):
        list(config_file._inner(content=new, dest=dest, **arguments))
    return "\n".join(record.getMessage() for record in caplog.records)


def test_a_rotated_pem_key_is_masked_whole_on_both_sides(caplog):
    old = (CERT + RSA_KEY).splitlines()
    new = CERT + NEW_KEY
    # The caller masks the new key as its secret (the key block, many lines at once).
    shown = diff_shown(caplog, "/etc/haproxy/certs/site.pem", old, new, secrets=[NEW_KEY.strip()])
    for line in (RSA_KEY + NEW_KEY).splitlines():
        if "PRIVATE KEY" not in line:
            assert line not in shown
    assert "- -----BEGIN RSA PRIVATE KEY-----" in shown
    assert "- ********(old)" in shown
    assert "+ ********" in shown
    assert "MIIDcert+line" in shown  # the certificate is no secret


def test_a_private_key_is_masked_even_where_the_caller_declared_no_secret(caplog):
    shown = diff_shown(caplog, "/etc/ssl/x.pem", RSA_KEY.splitlines(), NEW_KEY)
    assert "old+line" not in shown and "new/line" not in shown


def test_a_rotated_password_is_masked_old_and_new_without_an_extractor(caplog):
    # redis.conf: the caller knows the new password only.
    old = ["port 6379", "requirepass 0ld-s3cret-value", "maxmemory 100mb"]
    new = "port 6379\nrequirepass n3w-s3cret-value\nmaxmemory 100mb\n"
    shown = diff_shown(caplog, "/etc/redis/redis.conf", old, new, secrets=["n3w-s3cret-value"])
    assert "0ld-s3cret-value" not in shown and "n3w-s3cret-value" not in shown
    assert "- requirepass ********(old)" in shown
    assert "+ requirepass ********" in shown
    assert "- port" not in shown and "- maxmemory" not in shown  # unchanged lines stay


def test_a_removed_secret_of_a_secret_bearing_file_is_masked(caplog):
    # An accessory env file: the secret SEARCH_KEY is no longer declared at all.
    old = ["SEARCH_URL=http://search:9200", "SEARCH_KEY=gone-but-s3cret", "TOKEN=t0k3n-value"]
    new = "SEARCH_URL=http://search:9201\nTOKEN=n3w-t0k3n\n"
    shown = diff_shown(caplog, "/etc/deploykit/search.env", old, new, secrets=["n3w-t0k3n"])
    for value in ("gone-but-s3cret", "t0k3n-value", "n3w-t0k3n"):
        assert value not in shown
    assert "- SEARCH_KEY=********(old)" in shown
    assert "- TOKEN=********(old)" in shown
    assert "+ SEARCH_URL=http://search:9201" in shown  # new plain values are shown


def test_a_file_without_secrets_shows_its_old_lines(caplog):
    shown = diff_shown(caplog, "/etc/x.conf", ["port 1"], "port 2\n")
    assert "- port 1" in shown and "+ port 2" in shown
