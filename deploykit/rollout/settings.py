"""Knobs of the runs that change what the fleet runs: the rolls, the rollback, the
one-offs, their lock and audit log (group_data overrides them; docs/settings.md)."""

DEFAULTS = {
    # The app image tag deploys/web.py and deploys/jobs.py roll out: --data image_tag=v2
    "image_tag": "",
    # Hosts swapped at once after the first (canary) host: a number or "25%".
    "rollout_batch_size": 1,
    # Longest wait for a drained server's sessions to reach 0 (then maint anyway).
    "rollout_drain_timeout_s": 30.0,
    # Longest wait for a new container to answer 200 on its health path.
    "rollout_health_timeout_s": 30.0,
    # Longest wait for HAProxy to report a re-enabled server UP.
    "rollout_readmit_timeout_s": 30.0,
    # Once the kit's own check through the host's nginx passed, tell HAProxy the server
    # is healthy (`health up`): UP at once instead of after HAProxy's next check, up to
    # haproxy_check_inter_ms later. HAProxy keeps checking; haproxy_check_fall failed
    # checks take it out again. False: wait for HAProxy's own check.
    "rollout_readmit_force_up": True,
    # Seconds a stopping container gets to finish in-flight requests (SIGTERM → SIGKILL).
    "rollout_stop_timeout_s": 30,
    # Longest any command of a roll may run on a host beyond its own waits (the ones
    # above): then it is killed there (a hung dockerd, say) and the host goes back.
    "rollout_command_timeout_s": 120.0,
    # Before draining a server that serves: longest wait for another server of the
    # backend to be UP on every LB; then the roll refuses, naming the servers down.
    "rollout_last_server_wait_s": 30.0,
    # Drain a server even when no other one is UP (requests fail while it is swapped).
    "rollout_drain_last_server": False,
    # After a failed host, also roll the hosts already updated back to their old tag.
    "rollout_rollback_on_failure": False,
    # Releases whose images stay on each host, for rollback.
    "rollout_keep_releases": 3,
    # Canary gate: after the first host is back in rotation, watch its responses in
    # HAProxy for this many seconds (0 turns the gate off)...
    "rollout_canary_observe_s": 5.0,
    # ...and return it to its old release if more than this share of them failed.
    "rollout_canary_max_error_rate": 0.01,
    # Watch every host that way, not only the first one.
    "rollout_observe_every_host": False,
    # Run once before the roll, in a container of the NEW image on the first web host
    # (e.g. "python3 /app/manage.py migrate"); if it fails, no host is drained. "": none.
    "rollout_release_command": "",
    # On the machine running pyinfra: write the roll's per-host report here as JSON.
    "rollout_report_file": "",
    # The deploy lock, on the first host of group "lb": held by a deploy, rollback, job
    # roll or one-off while it runs. Release a stale one with deploys/unlock.py.
    "deploy_lock_file": "/var/lib/deploykit/deploy.lock",
    # On the same host: one JSON line per deploy, rollback, job roll, one-off and unlock.
    "deploy_audit_log": "/var/log/deploykit/audit.log",
    # A one-off's command in the lock record and the audit log: its name only (False), or
    # the whole command line with its arguments (True), which may hold data not to log.
    "deploy_audit_oneoff_arguments": False,
    # deploys/web.py also rolls the job workers (deploys/jobs.py) to the same tag, once
    # every web host is done.
    "rollout_jobs_after_web": False,
    # The command deploys/oneoff/run.py runs once in a container of the app image:
    # --data oneoff_command='python3 /app/manage.py migrate' (or a JSON list of words).
    "oneoff_command": "",
    # Where deploys/oneoff/*.py run (a web or job host); "" is the first web host.
    "oneoff_host": "",
    # deploys/provision.py runs only these components (--data only=redis, or a comma-
    # separated list); "" runs every one. See deploykit/provision_only.py.
    "only": "",
}
