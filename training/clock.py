"""The Procfile's `clock` process: rq's cron scheduler running the schedule in training/schedule.py, started again
when Redis goes away instead of exiting.

`rq cron` ends at the first Redis error, and under honcho (`make run`) one process ending stops them all: a Redis
restart would take the web and the worker down with the clock. This runs the same rq.cron.CronScheduler and, on a
Redis error, waits (1 s, doubling to 30 s) and starts a fresh one, which registers itself and its jobs again.
SIGTERM and Ctrl-C stop it as they stop `rq cron`.

    python -m training.clock [SCHEDULE]     (REDIS_URL names the Redis, as for the worker)
"""
from __future__ import annotations

import logging
import sys
import time

import redis
from rq.cron import CronScheduler
from rq.exceptions import SchedulerNotFound, StopRequested

from training.settings import Settings

log = logging.getLogger("winnow.clock")

SCHEDULE = "training.schedule"
MAX_BACKOFF_SECONDS = 30.0


class _Scheduler(CronScheduler):
    def register_death(self) -> None:
        # Leaving the registry is a courtesy (entries expire); failing at it must not hide why the scheduler
        # stopped: a Redis error is started again, a stop request ends the process.
        try:
            super().register_death()
        except (redis.RedisError, SchedulerNotFound) as exc:
            log.warning("the clock could not leave rq's scheduler registry: %s", exc)


def run(redis_url: str, *, schedule: str = SCHEDULE, max_backoff: float = MAX_BACKOFF_SECONDS) -> int:
    # Timeouts, so a Redis that hangs (rather than refuses) is noticed too; the scheduler sleeps up to 60 s.
    connection = redis.Redis.from_url(redis_url, socket_connect_timeout=5, socket_timeout=30,
                                      health_check_interval=30)
    backoff = 1.0
    try:
        while True:
            started = time.monotonic()
            try:
                scheduler = _Scheduler(connection=connection, logging_level="INFO")
                scheduler.load_config_from_file(schedule)
                scheduler.start()  # returns once SIGTERM or SIGINT asked it to stop
                return 0
            except (redis.RedisError, SchedulerNotFound) as exc:  # the latter: a Redis that lost its data
                if time.monotonic() - started > 2 * max_backoff:
                    backoff = 1.0  # it ran a good while: this is a new outage
                log.warning("the clock lost Redis (%s); starting again in %.0f s", exc, backoff)
                time.sleep(backoff)
                backoff = min(max_backoff, backoff * 2)
    except (StopRequested, KeyboardInterrupt):  # a signal while waiting to start again
        return 0


def main(argv: list[str] | None = None) -> int:
    """`python -m training.clock [SCHEDULE]`: SCHEDULE is a module or file registering jobs with rq.cron.register
    (default: training.schedule)."""
    args = sys.argv[1:] if argv is None else argv
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        # The clock signs nothing, so it must not make a deployment secret on disk while reading its settings.
        settings = Settings.from_env(secret_key="unused-by-the-clock")
    except ValueError as exc:
        print(f"bad settings: {exc}", file=sys.stderr)
        return 2
    return run(settings.redis_url, schedule=args[0] if args else SCHEDULE)


if __name__ == "__main__":
    sys.exit(main())
