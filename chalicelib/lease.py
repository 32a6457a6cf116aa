"""The running attempt's heartbeat: a thread that keeps the job's lease alive while it works.

A worker that dies (SIGKILL, out of memory, a crashed runtime) stops heartbeating, its lease runs
out within JOB_LEASE_SECONDS, and the sweeper sends the job again. The lease is several heartbeats
long, so one slow DynamoDB call does not hand a live job to a second worker (and if it does, the
attempt fence still lets only one of them finish it).
"""
from __future__ import annotations

import logging
import threading

from .jobs import Job, JobStore

log = logging.getLogger(__name__)


class Heartbeat:
    """``with Heartbeat(jobs, job, every, lease):`` extends the lease every ``every`` seconds.

    ``progress`` is the latest fraction the job reported; each beat records it, so a job's
    progress moves even between the progress reporter's own writes. ``lost`` turns true when
    another attempt took the job over (this one's writes are fenced from then on).
    """

    def __init__(self, jobs: JobStore, job: Job, every: float, lease: float):
        self.jobs, self.job, self.every, self.lease = jobs, job, every, lease
        self.progress: float | None = None
        self.lost = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"heartbeat-{job.job_id[:8]}", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            try:
                if not self.jobs.heartbeat(self.job, self.lease, self.progress):
                    self.lost = True
                    log.warning("job=%s attempt=%d: another attempt owns the job now; heartbeat stopped",
                                self.job.job_id, self.job.attempts)
                    return
            except Exception:  # a missed beat is survivable: the lease is several beats long
                log.warning("job=%s: heartbeat failed", self.job.job_id, exc_info=True)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
