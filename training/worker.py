"""The Procfile's `worker` process: rq's worker (with its scheduler), started again when Redis goes away instead of
exiting.

`rq worker` quits when Redis fails while it runs a job (rq reads the job's status from Redis while it waits for the
work horse and does not expect that read to fail: "found an unhandled exception, quitting...") and when a command
times out. Under honcho (`make run`) one process ending stops them all, so a Redis restart during a retrain took
the web and the clock down with the worker; on a machine of its own a worker that quit ran no retrain again until
someone restarted it. This runs the same rq Worker and, when it stops for anything but SIGTERM or Ctrl-C, waits
(1 s, doubling to 30 s) and starts a fresh one. A retrain the old worker's horse was running is continued like any
run whose worker died (the clock's recovery check, or the next trigger).

    python -m training.worker [QUEUE]     (REDIS_URL names the Redis; QUEUE defaults to WINNOW_QUEUE_NAME)
"""
from __future__ import annotations

import logging
import signal
import sys
import time

import redis
from rq import Worker
from rq.exceptions import StopRequested

from training.settings import Settings

log = logging.getLogger("winnow.worker")

MAX_BACKOFF_SECONDS = 30.0
# rq starts its scheduler again (it dies with a Redis outage) only in its maintenance pass, every 10 minutes by
# default; the scheduler runs the retries of a failed retrain (10, 30 and 60 s later), so look every minute.
MAINTENANCE_SECONDS = 60


def _stop(signum, frame):
    raise StopRequested()


def _stopped_on_request(worker: Worker | None) -> bool:
    # rq notes the time of a SIGTERM/SIGINT (warm shutdown) whether it stopped at once or after the running job.
    return worker is not None and (getattr(worker, "_stop_requested", False)
                                   or getattr(worker, "_shutdown_requested_date", None) is not None)


def _end_horse(worker: Worker | None) -> None:
    """A worker that quit mid-job leaves its horse running: end it, so two horses never run side by side."""
    if worker is None or not getattr(worker, "horse_pid", 0):
        return
    try:
        worker.kill_horse()
        worker.wait_for_horse()
    except Exception as exc:  # already gone, or not ours to wait for
        log.debug("could not end the old worker's horse: %s", exc)


def run(redis_url: str, queue: str, *, max_backoff: float = MAX_BACKOFF_SECONDS,
        worker_class: type[Worker] = Worker) -> int:
    backoff = 1.0
    while True:
        started = time.monotonic()
        worker: Worker | None = None
        try:
            connection = redis.Redis.from_url(redis_url, socket_connect_timeout=5, health_check_interval=30)
            worker = worker_class([queue], connection=connection, maintenance_interval=MAINTENANCE_SECONDS)
            worker.work(with_scheduler=True, logging_level="INFO")
            if _stopped_on_request(worker):
                return 0
            why = "it quit"
        except (StopRequested, KeyboardInterrupt):
            return 0
        except redis.RedisError as exc:  # starting, or leaving rq's registry, while Redis is away
            if _stopped_on_request(worker):
                return 0
            why = f"Redis: {exc}"
        _end_horse(worker)
        # rq's handlers name the old worker; until the next one starts, a signal simply stops the process.
        signal.signal(signal.SIGTERM, _stop)
        signal.signal(signal.SIGINT, _stop)
        if time.monotonic() - started > 2 * max_backoff:
            backoff = 1.0  # it ran a good while: this is a new outage
        log.warning("the worker stopped (%s); starting a new one in %.0f s", why, backoff)
        try:
            time.sleep(backoff)
        except (StopRequested, KeyboardInterrupt):
            return 0
        backoff = min(max_backoff, backoff * 2)


def main(argv: list[str] | None = None) -> int:
    """`python -m training.worker [QUEUE]`."""
    args = sys.argv[1:] if argv is None else argv
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        settings = Settings.from_env()
    except ValueError as exc:
        print(f"bad settings: {exc}", file=sys.stderr)
        return 2
    return run(settings.redis_url, args[0] if args else settings.queue_name)


if __name__ == "__main__":
    sys.exit(main())
