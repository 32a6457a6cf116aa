"""The scheduled sweeper: sends again every job whose worker stopped heartbeating.

Runs every minute (``@app.schedule`` on AWS, a scheduler thread in the local stack). A job found
running with an expired lease gets a new message under a deduplication id and a message group of
its own (job, run and the dead attempt): the dead attempt's message is still in flight and would
block its group until the visibility timeout. The new message's claim takes the job over, bumping
``attempts``, so the old attempt, should it wake up, can no longer finish it. After MAX_ATTEMPTS
the job is failed with the reason instead, and its targets are told.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

log = logging.getLogger(__name__)


@dataclass
class SweepReport:
    requeued: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        return f"sweep: requeued={len(self.requeued)} failed={len(self.failed)}"


def sweep(service) -> SweepReport:
    """One pass over the stale jobs; safe to run twice at once (every write is conditional)."""
    s = service.settings
    report = SweepReport()
    for job in service.jobs.stale():
        if job.attempts >= s.max_attempts:
            done = service.jobs.fail_stale(job, error={
                "code": "worker_lost",
                "message": f"gave up after {job.attempts} attempts: each time, the worker running the job "
                           "stopped without finishing (killed, out of memory, or past its time limit). "
                           "Submit the request again; if it keeps failing, split it into smaller jobs"})
            if done is not None:
                log.warning("job=%s attempt=%d: heartbeat stopped, no attempts left: failed", job.job_id,
                            job.attempts)
                report.failed.append(job.job_id)
                service.notify(done)
            continue
        service.queue.send(job.job_id, job.run, after_attempt=job.attempts)
        log.warning("job=%s attempt=%d: heartbeat stopped (lease over %.0fs ago); sent again", job.job_id,
                    job.attempts, service.clock() - job.lease_until)
        report.requeued.append(job.job_id)
    return report
