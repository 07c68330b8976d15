"""Is the process that started something still alive? Used to clean up after a killed writer and
to reap the Dagster runs a killed stage2 process left in progress. Below the launcher and the
schedules, which both use it; it imports neither."""

import os
import socket


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this machine."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    return True


def this_host() -> str:
    return socket.gethostname()


# Every run launched by this process carries its pid and host, so a run left STARTED by a killed
# process can be told from one still running.
PID_TAG = "stage2/pid"
HOST_TAG = "stage2/host"


def reap_orphaned_runs(instance) -> list[str]:
    """Mark failed the runs left in progress by a stage2 process on this host that is gone (a kill
    mid-run leaves them STARTED forever, and the schedules would wait on them). Returns their ids."""
    import dagster as dg

    runs = instance.get_runs(
        filters=dg.RunsFilter(
            statuses=[dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED],
            tags={HOST_TAG: this_host()},
        ),
        limit=200,
    )
    reaped = []
    for run in runs:
        pid = run.tags.get(PID_TAG, "")
        if pid.isdigit() and not pid_alive(int(pid)):
            instance.report_run_failed(
                run,
                message=f"the stage2 process (pid {pid}) running it is gone, killed or crashed; "
                "marked failed so that later runs and schedules do not wait on it",
            )
            reaped.append(run.run_id)
    return reaped
