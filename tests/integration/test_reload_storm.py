"""A roll while HAProxy reloads again and again: every state change holds, and no
request fails.

Not in the `every_release` set (Debian 12 hosts). On HAProxy 2.6 (Debian 12) a reload
while the machine's CPU is saturated stalls requests for seconds, whatever the kit does.
Measured on the 2-core sandbox with Debian 12 hosts by `python -m bench.reload_stall`
(150 requests/s, a reload every second for 30 s, no roll): reloads alone, 0 of 5392
failed; two busy loops alone, 0 of 5306; both, 725 of 5736 (requests waiting seconds for
a connection to a web host, then the load generator's 500-in-flight cap and its 10 s
timeout); see BENCHMARKS.md. Rolls under load on Debian 12 are proven by
test_rolling_deploy, which runs on both releases; this one runs on Debian 13 (HAProxy
3.0).
"""

from __future__ import annotations

from .sandbox_world import BackgroundPyinfra, LoadRun, deploy_args, lb_urls, other_tag, wait_for


def test_a_roll_while_haproxy_reloads_again_and_again_fails_no_request(on_v1):
    """Provision (or an unattended upgrade) may reload HAProxy in the middle of a roll:
    every drain, maint and ready of the roll must still hold, with no failed request."""
    fleet = on_v1
    target = other_tag(fleet)
    reloads = 0
    with LoadRun(lb_urls()) as load:
        # The canary gate off: it fails closed when a reload resets the counters it reads
        # (test_faults: a canary whose counters a reload reset goes back), and reloads
        # without pause leave it no window. What this test proves is that every state
        # change the roll makes holds past the reloads.
        roll = BackgroundPyinfra(*deploy_args(target, "--data", "rollout_canary_observe_s=0"))
        while roll.process.poll() is None:
            code, output = fleet.sh("lb1", "systemctl reload haproxy")
            assert code == 0, output
            reloads += 1
        run = roll.wait()
    assert run.returncode == 0, run.failure_excerpt()
    assert reloads >= 3, run.output[-2000:]
    load.assert_no_failed_request()
    assert all(fleet.running_tag(name) == target for name in fleet.hosts("web"))
    wait_for(lambda: set(fleet.server_states().values()) == {"UP"}, what="all servers UP")
