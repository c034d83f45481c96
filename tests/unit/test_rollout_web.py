"""The web roll's order and its reactions to failure, replayed against the fake fleet
(tests/unit/fake_fleet.py): the sequence an operator would see."""

from __future__ import annotations

from dataclasses import replace

import pytest

from deploykit.rollout.engine import RolloutFailed
from deploykit.rollout.web import WebRoll, WebRollSettings
from tests.unit.fake_fleet import Container, FakeFleet, observed
from tests.unit.fakes import FakeData

# The documented defaults, with the canary gate off: the tests that watch turn it on.
SETTINGS = WebRollSettings.from_data(
    FakeData(
        app_image="registry:5000/deploykit/app",
        app_nginx_image="registry:5000/deploykit/nginx:1",
        rollout_canary_observe_s=0,
    ),
    "v2",
    run_id="20261126",
)


SWAP = [
    "lb1: drain",
    "lb2: drain",
    "{h}: start app",
    "{h}: check app",
    "{h}: stop old nginx",
    "{h}: start nginx",
    "{h}: check pair",
    "lb1: ready",
    "lb2: ready",
    "{h}: stop old app",
    "{h}: list",
    "{h}: record and prune",
]


def expected_swap(host: str) -> list[str]:
    return [f"{host}: list"] + [event.format(h=host) for event in SWAP]


def test_hosts_roll_one_at_a_time_in_inventory_order_through_every_lb():
    fleet = FakeFleet({"web1": "v1", "web2": "v1", "web3": "v1"})
    reports = WebRoll(fleet, SETTINGS, ["web1", "web2", "web3"], ["lb1", "lb2"]).run()
    assert fleet.events == expected_swap("web1") + expected_swap("web2") + expected_swap("web3")
    assert [(r.host, str(r.old_version), str(r.new_version), r.result) for r in reports] == [
        ("web1", "v1", "v2", "updated"),
        ("web2", "v1", "v2", "updated"),
        ("web3", "v1", "v2", "updated"),
    ]


def test_first_deploy_has_no_old_pair_to_stop():
    fleet = FakeFleet({"web1": None})
    WebRoll(fleet, SETTINGS, ["web1"], ["lb1"]).run()
    assert "web1: stop old nginx" not in fleet.events
    assert "web1: stop old app" not in fleet.events
    assert fleet.events.index("web1: start nginx") < fleet.events.index("lb1: ready")


def test_failed_health_check_returns_the_host_to_its_old_pair_and_stops_the_roll():
    fleet = FakeFleet({"web1": "v1", "web2": "v1", "web3": "v1"}, fail={("web2", "check app"): 3})
    with pytest.raises(RolloutFailed) as failure:
        WebRoll(fleet, SETTINGS, ["web1", "web2", "web3"], ["lb1"]).run()
    assert failure.value.host == "web2"
    assert "new app container health check failed: exit 3: boom" in failure.value.reason
    tail = fleet.events[fleet.events.index("web2: check app") :]
    assert tail == [
        "web2: check app",
        "web2: remove new pair",
        "web2: restart old app",
        "web2: restart old nginx",
        "web2: check pair",
        "lb1: ready",
        "lb1: show servers",  # read back: really UP again
    ]
    assert not any(e.startswith("web3") for e in fleet.events)  # the roll stopped
    results = {r.host: r.result for r in failure.value.reports}
    assert results["web1"] == "updated"
    assert results["web2"].startswith("failed: new app container health check failed")
    assert any("STAY on v2: web1" in m for m in fleet.messages)


def test_rollback_on_failure_takes_updated_hosts_back_to_their_old_tag():
    fleet = FakeFleet({"web1": "v1", "web2": "v1"}, fail={("web2", "check pair"): 3})
    settings = replace(SETTINGS, rollback_on_failure=True)
    with pytest.raises(RolloutFailed) as failure:
        WebRoll(fleet, settings, ["web1", "web2"], ["lb1"]).run()
    assert fleet.serving_tag("web1") == "v1"
    first_report = failure.value.reports[0]
    assert (first_report.host, first_report.result) == ("web1", "rolled back to v1")
    assert any("web1: rolling back to v1" in m for m in fleet.messages)


def test_failed_nginx_swap_restarts_the_old_nginx_before_readmitting():
    fleet = FakeFleet({"web1": "v1"}, fail={("web1", "start nginx"): 125})
    with pytest.raises(RolloutFailed):
        WebRoll(fleet, SETTINGS, ["web1"], ["lb1"]).run()
    tail = fleet.events[fleet.events.index("web1: start nginx") :]
    assert tail == [
        "web1: start nginx",
        "web1: remove new pair",
        "web1: restart old app",
        "web1: restart old nginx",
        "web1: check pair",
        "lb1: ready",
        "lb1: show servers",
    ]


def test_host_already_on_the_tag_is_only_put_back_in_rotation():
    fleet = FakeFleet({"web1": "v2", "web2": "v1"})
    reports = WebRoll(fleet, SETTINGS, ["web1", "web2"], ["lb1"]).run()
    assert fleet.events[:2] == ["web1: list", "lb1: ready"]
    assert reports[0].result == "already on this release"


def test_batches_after_the_canary():
    fleet = FakeFleet({f"web{i}": "v1" for i in range(1, 6)})
    settings = replace(SETTINGS, batch_size=2)
    WebRoll(fleet, settings, [f"web{i}" for i in range(1, 6)], ["lb1"]).run()
    starts = [e.split(":")[0] for e in fleet.events if e.endswith("start app")]
    assert starts == ["web1", "web2", "web3", "web4", "web5"]
    assert any("3 batches: web1 | web2, web3 | web4, web5" in m for m in fleet.messages)


def test_drain_failure_on_an_lb_stops_before_touching_containers():
    fleet = FakeFleet({"web1": "v1"}, fail={("lb1", "drain"): 1})
    with pytest.raises(RolloutFailed, match="drain on lb1 failed"):
        WebRoll(fleet, SETTINGS, ["web1"], ["lb1"]).run()
    assert "web1: start app" not in fleet.events
    assert fleet.events[-2:] == ["lb1: ready", "lb1: show servers"]  # back in rotation
    assert fleet.out_of_rotation() == {}


def test_overhead_excludes_time_reported_as_waiting():
    ticks = iter(range(0, 1000))
    fleet = FakeFleet({"web1": "v1"})
    engine = WebRoll(fleet, SETTINGS, ["web1"], ["lb1"], clock=lambda: next(ticks))
    report = engine.run()[0]
    assert report.waited_s == pytest.approx(0.4)  # drain, app check, pair check, ready
    assert report.overhead_s == pytest.approx(report.total_s - 0.4)


STRAY = "v2-20261126000000"


def interrupted_fleet() -> FakeFleet:
    """web1 as an interrupted roll left it: a new app started, the old pair serving."""
    fleet = FakeFleet({"web1": "v1"})
    fleet.containers["web1"].append(Container("app", "v2", STRAY))
    return fleet


def test_a_host_left_half_done_is_swapped_again_and_the_leftovers_removed():
    fleet = interrupted_fleet()
    reports = WebRoll(fleet, SETTINGS, ["web1"], ["lb1"]).run()
    assert str(reports[0].old_version) == "v1" and reports[0].result == "updated"
    assert fleet.events[:4] == ["web1: list", "lb1: drain", "web1: start app", "web1: check app"]
    # The interrupted roll's app was removed; only the new pair is left.
    assert [c.release for c in fleet.containers["web1"]] == ["v2-20261126"] * 2


GATED = replace(SETTINGS, canary_observe_s=5.0, canary_max_error_rate=0.01)


def test_canary_gate_watches_only_the_first_host_then_retires_the_old_pair():
    fleet = FakeFleet({"web1": "v1", "web2": "v1"})
    reports = WebRoll(fleet, GATED, ["web1", "web2"], ["lb1", "lb2"]).run()
    assert [e for e in fleet.events if e.endswith("observe")] == ["lb1: observe", "lb2: observe"]
    web1 = fleet.events[: fleet.events.index("web1: stop old app") + 1]
    assert web1[-5:] == [
        "lb1: ready",
        "lb2: ready",
        "lb1: observe",
        "lb2: observe",
        "web1: stop old app",
    ]
    assert reports[0].phases["observe"] >= 0 and reports[0].waited_s >= 5.0


def test_canary_failing_in_haproxy_goes_back_to_the_old_pair_and_stops_the_roll():
    fleet = FakeFleet({"web1": "v1", "web2": "v1"})
    fleet.observation["web1"] = observed(responses=200, retries=37)
    with pytest.raises(RolloutFailed) as failure:
        WebRoll(fleet, GATED, ["web1", "web2"], ["lb1"]).run()
    assert failure.value.host == "web1"
    assert "canary gate: 37 of 237 requests failed in HAProxy within 5s (16%, limit 1%)" in (
        failure.value.reason
    )
    tail = fleet.events[fleet.events.index("lb1: observe") :]
    assert tail == [
        "lb1: observe",
        "lb1: drain",  # out of rotation before its containers change
        "web1: remove new pair",
        "web1: restart old app",
        "web1: restart old nginx",
        "web1: check pair",
        "lb1: ready",
        "lb1: show servers",
    ]
    assert "web1: stop old app" not in fleet.events  # the old app kept running throughout
    assert not any(e.startswith("web2") for e in fleet.events)


def test_canary_errors_below_the_threshold_pass():
    fleet = FakeFleet({"web1": "v1"})
    fleet.observation["web1"] = observed(responses=1000, errors=5, retries=4)
    WebRoll(fleet, GATED, ["web1"], ["lb1"]).run()
    assert "web1: stop old app" in fleet.events


def test_canary_without_traffic_passes_and_says_so():
    fleet = FakeFleet({"web1": "v1"})
    fleet.observation["web1"] = observed(responses=0)
    WebRoll(fleet, GATED, ["web1"], ["lb1"]).run()
    assert any("canary gate saw no traffic" in m for m in fleet.messages)


class InterruptingFleet(FakeFleet):
    """Ctrl-C arrives while web1 is being swapped."""

    engine = None

    def run(self, host, command, sudo=False, limit_s=None):
        if host == "web1" and self.classify(command)[0] == "check app":
            self.engine.stop_requested = True
        return super().run(host, command, sudo, limit_s)


def test_interrupt_finishes_the_host_in_progress_then_stops():
    fleet = InterruptingFleet({"web1": "v1", "web2": "v1"})
    engine = WebRoll(fleet, SETTINGS, ["web1", "web2"], ["lb1"])
    fleet.engine = engine
    with pytest.raises(RolloutFailed) as failure:
        engine.run()
    # web1 completed through its one LB; web2 never touched.
    assert fleet.events == [e for e in expected_swap("web1") if not e.startswith("lb2")]
    assert (failure.value.host, failure.value.touched) == ("web2", False)
    assert failure.value.reason == "interrupted before this host; hosts done (on v2): web1"


def test_a_rollback_that_fails_is_reported_and_does_not_crash_the_roll():
    # web2's new pair fails; web1's rollback to v1 then fails its health check too.
    fleet = FakeFleet({"web1": "v1", "web2": "v1"}, fail={("web2", "check pair"): 3})
    settings = replace(SETTINGS, rollback_on_failure=True)
    original_run = fleet.run

    def run(host, command, sudo=False, limit_s=None):
        if host == "web1" and "io.deploykit.tag=v1" in command:
            fleet.fail[("web1", "check app")] = 3
        return original_run(host, command, sudo, limit_s)

    fleet.run = run
    with pytest.raises(RolloutFailed) as failure:
        WebRoll(fleet, settings, ["web1", "web2"], ["lb1"]).run()
    assert failure.value.host == "web2"
    assert failure.value.reports[0].result.startswith("updated; rollback failed:")


# -- pinned digests ---------------------------------------------------------------------

OLD_DIGEST = "sha256:" + "1" * 64
NEW_DIGEST = "sha256:" + "2" * 64


def test_a_tag_pushed_again_is_a_new_release_and_every_host_is_swapped():
    """`latest` on every host, `latest` pushed again: same tag, another digest."""
    fleet = FakeFleet({"web1": f"latest@{OLD_DIGEST}", "web2": f"latest@{OLD_DIGEST}"})
    settings = replace(SETTINGS, tag="latest", digest=NEW_DIGEST)
    reports = WebRoll(fleet, settings, ["web1", "web2"], ["lb1"]).run()
    assert [r.result for r in reports] == ["updated", "updated"]
    assert {fleet.serving_version(h) for h in ("web1", "web2")} == {f"latest@{NEW_DIGEST}"}
    # The new app runs the image by digest, and says so in its labels.
    start = next(c for h, c in fleet.commands if h == "web1" and "--name app-" in c)
    assert f"registry:5000/deploykit/app@{NEW_DIGEST}" in start
    assert f"io.deploykit.digest={NEW_DIGEST}" in start
    assert ":latest" not in start.split("--label")[-1]


def test_a_host_on_the_same_tag_and_digest_is_left_as_it_is():
    fleet = FakeFleet({"web1": f"latest@{NEW_DIGEST}"})
    settings = replace(SETTINGS, tag="latest", digest=NEW_DIGEST)
    [report] = WebRoll(fleet, settings, ["web1"], ["lb1"]).run()
    assert report.result == "already on this release"
    assert not any("docker run" in c for _, c in fleet.commands)


def test_a_host_from_before_pinning_is_swapped_once_to_the_pinned_release():
    fleet = FakeFleet({"web1": "v2"})
    settings = replace(SETTINGS, digest=NEW_DIGEST)
    [report] = WebRoll(fleet, settings, ["web1"], ["lb1"]).run()
    assert report.result == "updated"
    assert fleet.serving_version("web1") == f"v2@{NEW_DIGEST}"


def test_rollback_on_failure_returns_to_the_exact_old_digest():
    fleet = FakeFleet(
        {"web1": f"latest@{OLD_DIGEST}", "web2": f"latest@{OLD_DIGEST}"},
        fail={("web2", "check pair"): 3},
    )
    settings = replace(SETTINGS, tag="latest", digest=NEW_DIGEST, rollback_on_failure=True)
    with pytest.raises(RolloutFailed) as failure:
        WebRoll(fleet, settings, ["web1", "web2"], ["lb1"]).run()
    assert fleet.serving_version("web1") == f"latest@{OLD_DIGEST}"
    assert fleet.serving_version("web2") == f"latest@{OLD_DIGEST}"
    assert failure.value.reports[0].result == "rolled back to latest@111111111111"
    rollback_start = [c for h, c in fleet.commands if h == "web1" and "--name app-" in c][-1]
    assert f"registry:5000/deploykit/app@{OLD_DIGEST}" in rollback_start


def ready_commands(fleet: FakeFleet) -> list[str]:
    return [command for _, command in fleet.commands if "state ready" in command]


def test_readmit_tells_haproxy_the_checked_pair_is_healthy():
    # Right after the kit's own check through nginx: UP at once, not after HAProxy's
    # next check (issue 12, item 3).
    fleet = FakeFleet({"web1": "v1"})
    WebRoll(fleet, SETTINGS, ["web1"], ["lb1", "lb2"]).run()
    readmits = ready_commands(fleet)
    assert len(readmits) == 2
    assert all("set server web/web1 health up" in command for command in readmits)


def test_readmit_waits_for_haproxys_own_check_when_told_to():
    fleet = FakeFleet({"web1": "v1"})
    settings = replace(SETTINGS, readmit_force_up=False)
    WebRoll(fleet, settings, ["web1"], ["lb1"]).run()
    assert ready_commands(fleet) and not any(
        "health up" in command for command in ready_commands(fleet)
    )


@pytest.mark.parametrize(
    "start, fail",
    [
        ({"web1": "v1"}, {("web1", "start nginx"): 125}),
        ({"web1": None}, {("web1", "check app"): 1}),
    ],
    ids=["restored-old-pair", "first-deploy-nothing-left"],
)
def test_a_restore_never_forces_a_server_up(start, fail):
    # A restore may leave nothing that answers (a first deploy): HAProxy's checks decide.
    fleet = FakeFleet(start, fail=fail)
    with pytest.raises(RolloutFailed):
        WebRoll(fleet, SETTINGS, ["web1"], ["lb1"]).run()
    assert ready_commands(fleet) and not any(
        "health up" in command for command in ready_commands(fleet)
    )


def test_a_rerun_settling_a_host_already_on_the_release_never_forces_it_up():
    fleet = FakeFleet({"web1": "v2"})
    WebRoll(fleet, SETTINGS, ["web1"], ["lb1"]).run()
    assert ready_commands(fleet) and not any(
        "health up" in command for command in ready_commands(fleet)
    )


# -- the old release's cleanup, off the critical path (issue 12, item 3) ------------------

CLEANUP_EVENTS = ["stop old app", "list", "record and prune"]


def test_a_hosts_cleanup_runs_beside_the_next_hosts_swap_and_ends_before_the_roll():
    # Deferred as late as a real one may run: web1's old pair is still being retired
    # when web2 is drained, and the roll returns only once every cleanup has ended.
    fleet = FakeFleet({"web1": "v1", "web2": "v1"}, defer_background=True)
    reports = WebRoll(fleet, SETTINGS, ["web1", "web2"], ["lb1"]).run()
    assert fleet.events.index("lb1: drain", 3) < fleet.events.index("web1: stop old app")
    assert fleet.events[-6:] == [f"{h}: {e}" for h in ("web1", "web2") for e in CLEANUP_EVENTS]
    assert all({c.tag for c in fleet.containers[h]} == {"v2"} for h in ("web1", "web2"))
    assert [(r.result, "cleanup" in r.phases) for r in reports] == [("updated", True)] * 2
    assert [m.split(" in ")[0] for m in fleet.messages if " -> " in m] == [
        "web1: v1 -> v2: updated",
        "web2: v1 -> v2: updated",
    ]


def test_the_cleanups_end_before_the_hosts_done_are_rolled_back():
    fleet = FakeFleet(
        {"web1": "v1", "web2": "v1"}, fail={("web2", "check pair"): 3}, defer_background=True
    )
    settings = replace(SETTINGS, rollback_on_failure=True)
    with pytest.raises(RolloutFailed):
        WebRoll(fleet, settings, ["web1", "web2"], ["lb1"]).run()
    record = fleet.events.index("web1: record and prune")
    rollback_drain = max(i for i, e in enumerate(fleet.events) if e == "lb1: drain")
    assert record < rollback_drain
    assert fleet.serving_tag("web1") == "v1"


def test_a_failed_release_record_is_said_and_the_roll_goes_on():
    fleet = FakeFleet({"web1": "v1", "web2": "v1"}, fail={("web1", "record and prune"): 1})
    reports = WebRoll(fleet, SETTINGS, ["web1", "web2"], ["lb1"]).run()
    assert [r.result for r in reports] == ["updated", "updated"]
    assert any(
        m.startswith("web1: recording the release and pruning images failed: exit 1")
        for m in fleet.messages
    )


def test_a_cleanup_that_raises_in_the_background_stops_the_roll_with_its_error():
    fleet = FakeFleet({"web1": "v1", "web2": "v1", "web3": "v1"}, defer_background=True)
    error = ValueError("unparsable listing")
    roll = WebRoll(fleet, SETTINGS, ["web1", "web2", "web3"], ["lb1"])
    original = roll.retire

    def retire(host, before, report):
        if host == "web1":
            raise error
        original(host, before, report)

    roll.retire = retire
    with pytest.raises(ValueError) as raised:
        roll.run()
    assert raised.value is error
    assert "a cleanup failed: ValueError: unparsable listing" in fleet.messages
    # The other cleanups still ended; nobody is left out of rotation.
    assert "web2: record and prune" in fleet.events
    assert fleet.out_of_rotation() == {}


def test_a_cleanup_that_raises_beside_a_swap_sends_that_host_back_and_stops_the_roll():
    # In greenlets, as the real runner: web1's cleanup fails while web2 is mid-swap.
    fleet = FakeFleet({"web1": "v1", "web2": "v1", "web3": "v1"}, concurrent=True)
    error = ValueError("unparsable listing")
    roll = WebRoll(fleet, SETTINGS, ["web1", "web2", "web3"], ["lb1"])
    original = roll.retire

    def retire(host, before, report):
        if host == "web1":
            raise error
        original(host, before, report)

    roll.retire = retire
    with pytest.raises(ValueError) as raised:
        roll.run()
    assert raised.value is error
    assert fleet.serving_tag("web1") == "v2"
    assert fleet.serving_tag("web2") == "v1"
    assert roll.reports[1].result.startswith("failed: stopped before")
    assert not any(event.startswith("web3") for event in fleet.events)
    assert fleet.out_of_rotation() == {}
