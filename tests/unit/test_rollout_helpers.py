"""The rolling deploy's small helpers: the release log and image pruning (exact strings,
then run with `sh -c` against a fake `docker`), `timed`, `CommandResult`,
`previous_release`, the summary table, and the registry manifest URL."""

from __future__ import annotations

import subprocess

import pytest

from deploykit.commands.images import (
    Version,
    digest_tag,
    prune_images,
    pull,
    record_and_prune,
    record_release,
)
from deploykit.commands.shell import timed
from deploykit.rollout.engine import CommandResult, HostReport
from deploykit.rollout.plan import previous_release
from deploykit.rollout.report import summary_table
from deploykit.rollout.web import WebRoll

APP = "registry:5000/deploykit/app"


# -- exact command strings ----------------------------------------------------------------


def test_record_release_appends_the_tag_to_the_log():
    assert record_release("/var/lib/deploykit/releases", Version("v2")) == (
        'mkdir -p "$(dirname /var/lib/deploykit/releases)"'
        " && echo v2 >> /var/lib/deploykit/releases"
    )


def test_prune_images_keeps_the_last_distinct_releases():
    assert prune_images(APP, "/var/lib/deploykit/releases", 3) == (
        "[ -s /var/lib/deploykit/releases ] || exit 0;"
        " keep=$(tac /var/lib/deploykit/releases | sed -e 's/^[^@]*@sha256:/sha256-/'"
        " | awk '!seen[$0]++' | head -n 3"
        " | tr '\\n' ' ');"
        ' [ -n "$keep" ] || exit 0;'
        " docker image ls --format '{{.Tag}}' registry:5000/deploykit/app"
        ' | while read -r tag; do case " $keep " in *" $tag "*) ;;'
        ' *) docker image rm registry:5000/deploykit/app:"$tag" >/dev/null 2>&1 || true ;;'
        " esac; done"
    )


def test_timed_reports_the_duration_and_keeps_the_exit_status():
    assert timed("docker stop --time 30 nginx-v1-1") == (
        "start=$(date +%s%N); docker stop --time 30 nginx-v1-1; status=$?;"
        " echo waited_ms=$((($(date +%s%N) - start) / 1000000)); exit $status"
    )


# -- the scripts, run with sh -------------------------------------------------------------

FAKE_DOCKER = r"""#!/bin/sh
case "$1 $2" in
"image ls") cat "$STUB_DIR/images" ;;
"image rm") echo "$3" >> "$STUB_DIR/removed" ;;
*) echo "unexpected: $*" >&2; exit 99 ;;
esac
"""


@pytest.fixture
def run_sh(tmp_path):
    """Runs a script with sh -c, a fake `docker` first on PATH (the real one is not)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "docker").write_text(FAKE_DOCKER)
    (bin_dir / "docker").chmod(0o755)

    def run(script: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["sh", "-c", script],
            env={"PATH": f"{bin_dir}:/usr/bin:/bin", "STUB_DIR": str(tmp_path)},
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=20,
        )

    return run


def removed(tmp_path) -> list[str]:
    path = tmp_path / "removed"
    return path.read_text().splitlines() if path.exists() else []


def test_record_release_creates_the_log_then_appends(run_sh, tmp_path):
    log = tmp_path / "var" / "lib" / "deploykit" / "releases"
    assert run_sh(record_release(str(log), Version("v1"))).returncode == 0
    assert run_sh(record_release(str(log), Version("v2", DIGEST_A))).returncode == 0
    assert log.read_text() == f"v1\nv2@{DIGEST_A}\n"


def test_record_release_in_a_directory_with_a_space(run_sh, tmp_path):
    log = tmp_path / "deploy kit" / "releases"
    result = run_sh(record_release(str(log), Version("v2")))
    assert result.returncode == 0, result.stderr
    assert log.read_text() == "v2\n"
    assert not (tmp_path / "kit").exists()


def test_prune_removes_only_tags_outside_the_last_distinct_releases(run_sh, tmp_path):
    log = tmp_path / "releases"
    # newest last; distinct from the end: v4, v3, v1, v2
    log.write_text("v1\nv2\nv1\nv3\nv3\nv4\n")
    (tmp_path / "images").write_text("v4\nv3\nv2\nv1\nv10\nv0\n")
    result = run_sh(prune_images(APP, str(log), 3))
    assert result.returncode == 0, result.stderr
    assert removed(tmp_path) == [f"{APP}:v2", f"{APP}:v10", f"{APP}:v0"]


DIGEST_A = "sha256:" + "a" * 64
DIGEST_B = "sha256:" + "b" * 64
DIGEST_C = "sha256:" + "c" * 64


def test_prune_keeps_the_last_distinct_digests_whatever_their_tags(run_sh, tmp_path):
    """`latest` pushed three times: three releases, each kept by its digest tag; the
    oldest one beyond `keep` goes, and so does a plain tag no release names."""
    log = tmp_path / "releases"
    log.write_text(f"latest@{DIGEST_A}\nlatest@{DIGEST_B}\nv2@{DIGEST_B}\nlatest@{DIGEST_C}\n")
    tags = [digest_tag(d) for d in (DIGEST_A, DIGEST_B, DIGEST_C)]
    (tmp_path / "images").write_text("\n".join([*tags, "latest", "v1"]) + "\n")
    assert run_sh(prune_images(APP, str(log), 2)).returncode == 0
    # B counts once although two tags named it: C and B are the last two releases.
    assert removed(tmp_path) == [f"{APP}:{tags[0]}", f"{APP}:latest", f"{APP}:v1"]


def test_pull_by_digest_tags_the_image_under_the_images_lock():
    assert pull(f"{APP}@{DIGEST_A}") == (
        "flock --wait 600 /run/deploykit/images.lock sh -c"
        f" 'docker pull --quiet {APP}@{DIGEST_A} >/dev/null"
        f" && docker tag {APP}@{DIGEST_A} {APP}:sha256-{'a' * 64}'"
    )


def test_pull_by_tag_is_a_plain_pull_under_the_lock():
    assert pull(f"{APP}:v2") == (
        f"flock --wait 600 /run/deploykit/images.lock docker pull --quiet {APP}:v2"
    )


def test_record_and_prune_of_a_pinned_release_tags_it_before_pruning():
    command = record_and_prune("/r", Version("latest", DIGEST_A), APP, 3)
    assert command.startswith(f'mkdir -p "$(dirname /r)" && echo latest@{DIGEST_A} >> /r; ')
    # Under the lock, the tag first: a prune must never see the new release untagged.
    locked = command.split("; ", 1)[1]
    assert locked.startswith("flock --wait 600 /run/deploykit/images.lock sh -c ")
    assert locked.index(f"docker tag {APP}@{DIGEST_A} {APP}:sha256-") < locked.index("tac /r")


def test_a_digest_tag_needs_a_sha256_digest():
    with pytest.raises(ValueError, match="not a sha256 digest"):
        digest_tag("sha256:abc")


def test_versions_read_write_and_shorten():
    pinned = Version.parse(f"v2@{DIGEST_A}")
    assert (pinned.tag, pinned.digest, str(pinned)) == ("v2", DIGEST_A, f"v2@{DIGEST_A}")
    assert pinned.short == "v2@aaaaaaaaaaaa"
    assert pinned.image(APP) == f"{APP}@{DIGEST_A}"
    unpinned = Version.parse("v1")
    assert (str(unpinned), unpinned.short, unpinned.image(APP)) == ("v1", "v1", f"{APP}:v1")


def test_prune_keeps_everything_in_the_last_releases(run_sh, tmp_path):
    log = tmp_path / "releases"
    log.write_text("v1\nv2\n")
    (tmp_path / "images").write_text("v2\nv1\n")
    assert run_sh(prune_images(APP, str(log), 3)).returncode == 0
    assert removed(tmp_path) == []


def test_prune_reads_a_log_in_a_directory_with_a_space(run_sh, tmp_path):
    log = tmp_path / "deploy kit" / "releases"
    log.parent.mkdir()
    log.write_text("v1\nv2\n")
    (tmp_path / "images").write_text("v2\nv1\n")
    assert run_sh(prune_images(APP, str(log), 1)).returncode == 0
    assert removed(tmp_path) == [f"{APP}:v1"]


def test_prune_without_a_release_log_removes_nothing(run_sh, tmp_path):
    # Nothing is known to keep: deleting every image would take the rollback targets.
    (tmp_path / "images").write_text("v2\nv1\n")
    run_sh(prune_images(APP, str(tmp_path / "missing" / "releases"), 3))
    assert removed(tmp_path) == []


def test_timed_keeps_the_status_and_prints_the_duration(run_sh):
    result = run_sh(timed("sleep 0.2 && false"))
    assert result.returncode == 1
    [line] = result.stdout.splitlines()
    assert line.startswith("waited_ms=")
    assert 200 <= int(line.removeprefix("waited_ms=")) < 5000


def test_timed_of_a_success(run_sh):
    result = run_sh(timed("echo done"))
    assert result.returncode == 0
    assert result.stdout.splitlines()[0] == "done"
    assert result.stdout.splitlines()[1].startswith("waited_ms=")


# -- previous_release ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("log", "current", "previous"),
    [
        ("v1\nv2\nv3\n", "v3", "v2"),
        ("v1\nv2\nv3\nv3\n", "v3", "v2"),  # a re-run of the same tag is not a release
        ("v1\nv2\n", "v3", "v2"),  # current not logged yet: the last logged one
        ("v1\nv2\n", None, "v2"),
        ("  v1 \n\n v2\n", "v2", "v1"),
        ("v3\n", "v3", None),
        ("", "v3", None),
        ("", None, None),
    ],
)
def test_previous_release(log, current, previous):
    assert previous_release(log, current) == previous


# -- CommandResult ------------------------------------------------------------------------


def test_command_result_ok_only_on_exit_0():
    assert CommandResult(0, "", "").ok
    assert not CommandResult(3, "", "").ok
    assert not CommandResult(None, "", "").ok


def test_waited_s_sums_every_waited_ms_line():
    result = CommandResult(0, "waited_ms=1200\nsome output\nwaited_ms=350\nwaited_ms=5\n", "")
    assert result.waited_s == pytest.approx(1.555)


def test_waited_s_is_0_without_waited_ms():
    assert CommandResult(0, "hello\n", "waited_ms=99\n").waited_s == 0


def test_reason_names_the_exit_code_and_the_last_stderr_line():
    result = CommandResult(3, "waited_ms=300\n", "first\ntimed out after 0.3s: 5 sessions left\n")
    assert result.reason() == "exit 3: timed out after 0.3s: 5 sessions left"


def test_reason_falls_back_to_stdout_then_to_no_output():
    assert CommandResult(1, "last words\n", "  \n").reason() == "exit 1: last words"
    assert CommandResult(1, "", "").reason() == "exit 1: no output"


def test_reason_of_a_command_that_never_finished():
    assert CommandResult(None, "", "ssh: broken pipe\n").reason() == (
        "connection lost (ssh: broken pipe)"
    )
    assert CommandResult(None, "", "").reason() == "connection lost (no output)"


# -- summary_table ------------------------------------------------------------------------


def test_summary_table_has_a_row_per_host_and_dashes_for_missing_phases():
    updated = HostReport(
        "web1",
        Version("v1", DIGEST_A),
        Version("v2", DIGEST_B),
        {"drain": 1.5, "start": 0.25, "health": 2.0, "readmit": 0.5, "cleanup": 1.0},
        waited_s=4.0,
        result="updated",
    )
    failed = HostReport(
        "web2", None, Version("v2"), {"drain": 0.1, "start": 0.2}, result="failed: health check"
    )
    assert summary_table([updated, failed], WebRoll.PHASES).splitlines() == [
        "",
        "deploykit: roll summary (seconds)",
        "host         versions                              drain    start   health  readmit"
        "  observe  cleanup   total  overhead  result",
        "web1         v1@aaaaaaaaaaaa -> v2@bbbbbbbbbbbb     1.50     0.25     2.00     0.50"
        "        -     1.00    5.25      1.25  updated",
        "web2         - -> v2                                0.10     0.20        -        -"
        "        -        -    0.30      0.30  failed: health check",
    ]


def test_summary_table_of_no_host_is_the_header_only():
    assert len(summary_table([], WebRoll.PHASES).splitlines()) == 3
