"""The pyinfra callbacks of the runs: a planned roll (rollout/requests.py), run once
from one host's operation (the engine over pyinfra's connections, Ctrl-C handled, the
outcome logged, reported and written to the audit log), and the explicit unlock.

pyinfra passes (state, host) to a callback whose first parameters bear those names; a
False return fails the operation, and so the run. (This module imports neither name
from pyinfra, so nothing is shadowed.)"""

from __future__ import annotations

import time

from pyinfra import logger

from .engine import RolloutFailed, describe
from .lock import release_stale_lock, report_outcome
from .pyinfra_fleet import PyinfraFleet, finish_host_on_interrupt
from .report import summary_table, write_report
from .requests import RollRequest


def run_roll(state, host, request: RollRequest) -> bool:
    """Run the roll `request` planned, across its hosts, from `host`'s operation."""
    fleet = PyinfraFleet(state)
    roll = request.roll(fleet, request.settings, request.hosts, request.lb_hosts)
    started = time.monotonic()
    try:
        with finish_host_on_interrupt(
            roll, fleet, lambda name: report_outcome(signal=name)
        ):
            reports = roll.run()
    except RolloutFailed as failure:
        write_report(request, failure.reports, time.monotonic() - started, str(failure))
        report_outcome(result="failed", stopped_at=failure.host, reason=failure.reason)
        logger.info(summary_table(failure.reports, roll.PHASES))
        done = [r.host for r in failure.reports if r.result == "updated"]
        stranded = {r.host: r.stranded for r in failure.reports if r.stranded}
        if failure.host in stranded:
            where = f"{failure.host} is NOT back in service: {stranded[failure.host]}."
        elif failure.touched:
            where = roll.RESTORED.format(host=failure.host)
        else:
            where = f"{failure.host} was not touched."
        logger.error(
            f"deploykit: {roll.NAME} STOPPED at {failure.host}: {failure.reason}. {where}"
            + _stranded_others(stranded, failure.host)
            + (
                f" Already on {request.settings.version.short}: {', '.join(done)}."
                if done
                else " No host was left on the new release."
            )
        )
        return False
    except BaseException as error:
        # Not a step's failure (a bug, an interrupt, a timeout): the hosts in progress
        # went back first (engine.py); report, then let the error go up unchanged.
        write_report(request, roll.reports, time.monotonic() - started, describe(error))
        report_outcome(result="failed", reason=describe(error))
        logger.info(summary_table(roll.reports, roll.PHASES))
        stranded = {r.host: r.stranded for r in roll.reports if r.stranded}
        logger.error(
            f"deploykit: {roll.NAME} ABORTED by {describe(error)}. The hosts in progress "
            "went back to their previous release." + _stranded_others(stranded, None)
        )
        raise
    write_report(request, reports, time.monotonic() - started, None)
    report_outcome(result="succeeded")
    logger.info(summary_table(reports, roll.PHASES))
    return True


def _stranded_others(stranded: dict[str, str], said: str | None) -> str:
    others = [f"{host} ({state})" for host, state in stranded.items() if host != said]
    return f" NOT back in service: {', '.join(others)}." if others else ""


def release_lock_by_hand(state, host) -> bool:
    """deploys/unlock.py: release the deploy lock `host` (the lock host) holds."""
    return release_stale_lock(host)
