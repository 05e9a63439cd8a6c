"""The clock process (python -m training.clock): rq's cron scheduler that outlives a Redis outage, because under
honcho one process exiting stops the web and the worker too."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import redis

from tests.service_support import PrivateRedis, end_process, wait_until
from training import clock, schedule
from training.settings import Settings

ROOT = Path(__file__).resolve().parent.parent

# A schedule that enqueues every second, so the test sees the clock at work within moments.
FAST_SCHEDULE = '''
from rq import cron
cron.register(func=print, args=("tick",), queue_name="clock-test", interval=1, name="tick")
'''


def _queued(url: str) -> int:
    client = redis.Redis.from_url(url, socket_connect_timeout=1)
    try:
        return client.llen("rq:queue:clock-test")
    except redis.RedisError:
        return -1
    finally:
        client.close()


def test_the_clock_keeps_running_through_a_redis_outage_and_stops_cleanly(tmp_path):
    (tmp_path / "fast_schedule.py").write_text(FAST_SCHEDULE)
    store = PrivateRedis(tmp_path / "redis").start()
    env = dict(os.environ, REDIS_URL=store.url, PYTHONUNBUFFERED="1")
    log = open(tmp_path / "clock.log", "wb")
    process = subprocess.Popen([sys.executable, "-m", "training.clock", str(tmp_path / "fast_schedule.py")],
                               cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        assert wait_until(lambda: _queued(store.url) >= 2, 30, 0.1), (tmp_path / "clock.log").read_text()
        store.stop()  # Redis crashes: rq cron would exit here
        time.sleep(3)
        assert process.poll() is None, (tmp_path / "clock.log").read_text()
        store.start()  # same port, same data
        before = _queued(store.url)
        assert wait_until(lambda: _queued(store.url) > before, 60, 0.1), (tmp_path / "clock.log").read_text()
        assert process.poll() is None
        process.send_signal(signal.SIGTERM)
        assert process.wait(15) == 0
        assert "lost Redis" in (tmp_path / "clock.log").read_text()
    finally:
        end_process(process, log, store)


def test_the_shipped_schedule_runs_the_nightly_retrain_and_the_recovery_check():
    jobs = schedule.periodic_jobs(Settings(secret_key="x", retrain_cron="0 3 * * *", queue_name="winnow"))
    assert {(j["name"], j["queue_name"]) for j in jobs} == {("retrain-nightly", "winnow"), ("retrain-recover", "winnow")}
    assert clock.SCHEDULE == schedule.__name__
