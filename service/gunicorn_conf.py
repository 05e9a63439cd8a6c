"""gunicorn settings for Winnow's web process (the Procfile's `web` line), read from the environment.

No preload: each worker imports the app itself and so owns its model holder and its poll thread (a thread started
in the master would not survive the fork). Metrics go through PROMETHEUS_MULTIPROC_DIR so /metrics, answered by
any one worker, counts them all.
"""
from __future__ import annotations

import multiprocessing
import os
import shutil
import tempfile
from pathlib import Path

bind = os.environ.get("WINNOW_BIND", "127.0.0.1:8000")
workers = int(os.environ.get("WINNOW_WEB_WORKERS") or 2 * multiprocessing.cpu_count())
# A thread per connection lets a worker keep connections alive and overlap its Redis round trips; bench/http.py
# measures this against plain sync workers.
worker_class = os.environ.get("WINNOW_WEB_WORKER_CLASS", "gthread")
# gunicorn quietly runs `sync` as `gthread` when threads > 1, so a thread pool is the default for gthread only.
threads = int(os.environ.get("WINNOW_WEB_THREADS") or (4 if worker_class == "gthread" else 1))
keepalive = 5
timeout = 30
graceful_timeout = 10
preload_app = False
# gunicorn's control socket defaults to one path per user, which several instances on a machine would fight over.
control_socket_disable = True
accesslog = None  # service/logs.py writes one JSON line per request instead
errorlog = "-"
loglevel = os.environ.get("WINNOW_LOG_LEVEL", "info")


def _metrics_dir() -> Path:
    configured = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if configured:
        return Path(configured)
    data_dir = Path(os.environ.get("WINNOW_DATA_DIR") or Path(__file__).resolve().parent.parent / "var")
    # One directory per bind address, so two web processes on one machine never mix their samples.
    return data_dir / "metrics" / bind.replace("/", "_").replace(":", "_")


# Set before any worker imports prometheus_client: the client picks its storage at import time.
_dir = _metrics_dir()
os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(_dir)


def on_starting(server) -> None:
    """Start from an empty metrics directory: samples of a previous run's workers would be counted again."""
    if _dir.exists():
        # Swap the old directory out atomically, then delete it, so no worker ever sees a half-emptied one.
        trash = Path(tempfile.mkdtemp(prefix=".old-", dir=_dir.parent))
        _dir.rename(trash / "metrics")
        shutil.rmtree(trash, ignore_errors=True)
    _dir.mkdir(parents=True, exist_ok=True)


def post_worker_init(worker) -> None:
    # The worker has imported the app and loaded its model: read keys and site settings, then keep those objects
    # out of the garbage collector's way.
    from service import ops

    ops.worker_booted(worker.wsgi)


def worker_exit(server, worker) -> None:
    # In the exiting worker, whatever stopped it: what it answered but still holds in memory goes to Redis first.
    app = getattr(worker, "wsgi", None)
    if app is not None and hasattr(app, "extensions"):
        from service import ops

        ops.worker_exiting(app)


def child_exit(server, worker) -> None:
    # Not via service.metrics: importing the metric objects here would give the master live samples of its own.
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)
