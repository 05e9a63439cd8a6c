"""Every periodic job, as data, read by the one `clock` process (`python -m training.clock`, rq's cron scheduler).

The clock only enqueues; workers run the jobs. A periodic retrain goes through jobs.enqueue_retrain, so the
schedule can never start a second retrain beside one already running.
"""
from __future__ import annotations

from rq import cron

from training import jobs
from training.settings import Settings


def periodic_jobs(settings: Settings) -> list[dict]:
    """The schedule: keyword arguments for rq.cron.register, one dict per job. Cron fields are in the clock's
    local time zone (rq's rule); run the clock with TZ=UTC for the UTC times the settings document."""
    return [
        # Nightly retrain from every label (WINNOW_RETRAIN_CRON); a no-op skip when nothing new was labelled.
        dict(func=jobs.scheduled_retrain, queue_name=settings.queue_name, cron=settings.retrain_cron,
             job_timeout=60, result_ttl=86400, failure_ttl=7 * 86400, name="retrain-nightly"),
        # Requeue a retrain whose worker died mid-run, or a follow-up a failed run left stranded.
        dict(func=jobs.recover_retrain, queue_name=settings.queue_name, interval=60,
             job_timeout=60, result_ttl=600, failure_ttl=86400, name="retrain-recover"),
    ]


def register_all(settings: Settings) -> None:
    for spec in periodic_jobs(settings):
        cron.register(**spec)


# The clock (rq's cron scheduler) imports this module and picks up whatever it registered. The clock signs nothing, so it must not make
# a deployment secret on disk as a side effect of reading its settings.
register_all(Settings.from_env(secret_key="unused-by-the-clock"))
