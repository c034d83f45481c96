from deploykit.rollout.containers import HostContainers

OLD = "v1-20261126100000"
NEW = "v2-20261126110000"


def parse(rows: str) -> HostContainers:
    return HostContainers.parse(rows)


def test_steady_host_serves_its_only_release():
    containers = parse(f"app v1 {OLD} running\nnginx v1 {OLD} running\n")
    current = containers.current()
    assert (current.pair.tag, current.serving) == ("v1", True)
    assert containers.others({OLD}) == []


def test_killed_after_starting_the_new_app_the_old_pair_still_holds_the_port():
    containers = parse(f"app v2 {NEW} running\n" f"app v1 {OLD} running\nnginx v1 {OLD} running\n")
    assert containers.current().pair.release == OLD
    assert [r.pair.release for r in containers.others({OLD})] == [NEW]


def test_killed_between_the_nginx_swap_falls_back_to_the_latest_complete_pair():
    # The old nginx was stopped, the new one never started: nothing holds the port.
    containers = parse(f"app v2 {NEW} running\n" f"app v1 {OLD} running\nnginx v1 {OLD} exited\n")
    current = containers.current()
    assert current.pair.release == OLD
    assert (current.app, current.nginx, current.serving) == ("running", "exited", False)


def test_new_pair_serving_after_an_interruption_is_the_current_one():
    containers = parse(
        f"nginx v2 {NEW} running\napp v2 {NEW} running\n"
        f"app v1 {OLD} exited\nnginx v1 {OLD} exited\n"
    )
    assert containers.current().pair.release == NEW
    assert [r.pair.release for r in containers.others({NEW})] == [OLD]


def test_empty_host():
    assert parse("").current() is None
