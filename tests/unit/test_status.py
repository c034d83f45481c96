"""deploys/status.py's rendering, from facts as the hosts report them."""

from deploykit.status import audit_rows, health_of, host_rows, render_status

DIGEST = "sha256:3f1c0a9e2b7d" + "0" * 52
APP = {
    "name": "app-v2",
    "role": "app",
    "tag": "v2",
    "status": "Up 3 minutes (healthy)",
    "digest": DIGEST,
}
# Started before digests were pinned: no digest label.
NGINX = {"name": "nginx-v2", "role": "nginx", "tag": "v2", "status": "Up 3 minutes (unhealthy)"}
OLD = {"name": "app-v1", "role": "app", "tag": "v1", "status": "Exited (0) 2 minutes ago"}


def test_health_is_read_from_dockers_status_text():
    assert health_of("Up 3 minutes (healthy)") == "healthy"
    assert health_of("Up 3 minutes (unhealthy)") == "unhealthy"
    assert health_of("Up 1 second (health: starting)") == "starting"
    assert health_of("Up 5 hours") == "running"
    assert health_of("Exited (137) 1 minute ago") == "exited"


def test_each_running_container_is_shown_with_its_server_on_every_lb():
    rows = host_rows(
        "web1",
        [OLD, NGINX, APP],
        {"lb1": {"web1": ("UP", 4)}, "lb2": {"web1": ("MAINT", 0)}, "lb3": None},
    )
    assert rows == [
        "  web1       app      v2@3f1c0a9e2b7d            healthy   "
        "lb1: UP 4 sess; lb2: MAINT 0 sess; lb3: no answer",
        "  web1       nginx    v2                         unhealthy",
    ]


def test_a_host_without_containers_says_so():
    assert host_rows("job1", [], {"lb1": {"web1": ("UP", 0)}}) == [
        "  job1       -        (no app container)"
    ]


def test_audit_lines_show_who_what_and_how_it_ended():
    lines = [
        '{"at": "T1", "who": "ann@laptop", "action": "deploy", "tag": "v2", "event": "started"}',
        '{"at": "T2", "who": "ann@laptop", "action": "deploy", "tag": "v2", "event": "finished",'
        ' "result": "failed", "reason": "health check failed"}',
        '{"at": "T3", "who": "bob@ci", "event": "unlocked", "released": "ann@laptop since T1"}',
        "not json",
    ]
    assert audit_rows(lines) == [
        "  T1  ann@laptop           deploy v2        started",
        "  T2  ann@laptop           deploy v2        failed (health check failed)",
        "  T3  bob@ci               unlock (was: ann@laptop since T1) unlocked",
        "  not json",
    ]


def test_status_names_the_lock_holder_or_says_free():
    text = render_status(["  web1 ..."], "ann@laptop since T1: deploy v2 (pid 9)", [], "lb1")
    assert "deploy lock on lb1: ann@laptop since T1: deploy v2 (pid 9)" in text
    assert "  (none yet)" in text
    assert "deploy lock on lb1: free" in render_status([], "", [], "lb1")
