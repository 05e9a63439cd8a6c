"""`make run`: the launcher starts an embedded Redis (AOF, fsync always) and the Procfile, and stops them all cleanly."""
from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import redis

from service.launcher import EmbeddedRedis, port_is_free
from tests.service_support import free_port

ROOT = Path(__file__).resolve().parent.parent
OPS_DB = 5  # shared with tests/test_ops.py, which flushes it per test too


def _status(url: str, token: str | None = None) -> int:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code


def _holders(path: Path) -> set[int]:
    """Processes with the file open (Linux /proc)."""
    target, found = str(path.resolve()), set()
    for fd_dir in Path("/proc").glob("[0-9]*/fd"):
        try:
            if any(os.readlink(fd) == target for fd in fd_dir.iterdir()):
                found.add(int(fd_dir.parent.name))
        except OSError:  # gone, or not ours to read
            continue
    return found


class Launcher:
    def __init__(self, data_dir: Path, redis_port: int, web_port: int, *processes: str, log: Path,
                 redis_url: str | None = None):
        env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "WINNOW_REDIS_URL",
                                                                 "WINNOW_SECRET_KEY", "PROMETHEUS_MULTIPROC_DIR")}
        env.update(WINNOW_DATA_DIR=str(data_dir), WINNOW_REDIS_PORT=str(redis_port),
                   WINNOW_BIND=f"127.0.0.1:{web_port}", WINNOW_WEB_WORKERS="1", PYTHONUNBUFFERED="1")
        if redis_url:
            env["REDIS_URL"] = redis_url
        self.env = env
        self.base = f"http://127.0.0.1:{web_port}"
        self.log_path = log
        self._log = open(log, "wb")
        self.proc = subprocess.Popen([sys.executable, "-m", "service.launcher", *processes], cwd=ROOT, env=env,
                                     stdout=self._log, stderr=subprocess.STDOUT)

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout: float = 150) -> None:
        deadline = time.monotonic() + timeout
        while True:
            assert self.proc.poll() is None, f"launcher exited early:\n{self.output()[-4000:]}"
            try:
                if _status(self.base + "/healthz") == 200 and _status(self.base + "/readyz") == 200:
                    return
            except OSError:
                pass
            assert time.monotonic() < deadline, f"not ready in {timeout} s:\n{self.output()[-4000:]}"
            time.sleep(0.3)

    def stop(self, sig: int) -> int:
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(30)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            self._log.close()


def test_make_run_starts_embedded_redis_and_the_procfile_then_stops_cleanly(tmp_path):
    data_dir = tmp_path / "var"
    redis_port, web_port = free_port(), free_port()
    first = Launcher(data_dir, redis_port, web_port, log=tmp_path / "first.log")
    try:
        first.wait_ready()
        out = first.output()
        admin = re.search(r"admin token\s+(wm_\S+)", out).group(1)
        site_key = re.search(r"demo site key\s+([a-z0-9]{12})\s", out).group(1)
        assert "winnow keys create" in out
        for name in ("web.1", "worker.1", "clock.1"):
            assert f"{name} started" in out

        state = json.loads((data_dir / "redis" / "embedded.json").read_text())
        assert state["port"] == redis_port
        client = redis.Redis(port=redis_port)
        assert client.config_get("appendonly") == {"appendonly": "yes"}
        assert client.config_get("appendfsync") == {"appendfsync": "always"}
        assert Path(client.config_get("dir")["dir"]).resolve() == (data_dir / "redis").resolve()
        assert (data_dir / "secret_key").exists()
        raw = b"".join(f.read_bytes() for f in (data_dir / "redis").rglob("*.aof*") if f.is_file())
        assert raw and admin.encode() not in raw and site_key.encode() not in raw  # only digests are stored
        client.close()

        assert _status(first.base + "/api/v1/queue", admin) == 200
        assert _status(first.base + "/api/v1/queue") == 401

        # A second `make run` on the same data directory (another web address, as the busy-port error suggests)
        # is refused: it used to shut the first one's Redis down and take its data over. Also while the first one
        # restarts its Redis, when there is no state file to find.
        state_file = data_dir / "redis" / "embedded.json"
        state_file.rename(state_file.with_suffix(".away"))
        other = subprocess.run([sys.executable, "-m", "service.launcher", "web"], cwd=ROOT, capture_output=True,
                               text=True, timeout=60, env={**first.env, "WINNOW_BIND": f"127.0.0.1:{free_port()}"})
        state_file.with_suffix(".away").rename(state_file)
        assert other.returncode == 1 and "already running" in other.stderr and "WINNOW_DATA_DIR" in other.stderr
        assert f"launcher pid {first.proc.pid}" in other.stderr
        # The launcher alone holds the lock: a killed launcher's processes would otherwise keep the directory.
        assert _holders(data_dir / "redis" / "launcher.lock") == {first.proc.pid}
        assert _status(first.base + "/readyz") == 200

        # The embedded Redis killed under it: started again on its port, and Winnow is ready again by itself.
        os.kill(state["pid"], signal.SIGKILL)
        deadline = time.monotonic() + 60

        def restarted() -> bool:
            try:
                now = json.loads((data_dir / "redis" / "embedded.json").read_text())
            except (OSError, ValueError):  # being written again
                return False
            return now.get("pid") != state["pid"] and _status(first.base + "/readyz") == 200

        while not restarted():
            assert time.monotonic() < deadline, first.output()[-3000:]
            time.sleep(0.3)
        assert "embedded Redis exited" in first.output() and "embedded Redis is back" in first.output()
        assert _status(first.base + "/api/v1/queue", admin) == 200
    finally:
        code = first.stop(signal.SIGTERM)
    assert code in (0, 143), first.output()[-3000:]
    assert "embedded Redis stopped" in first.output()
    assert port_is_free(redis_port) and port_is_free(web_port)
    assert not (data_dir / "redis" / "embedded.json").exists()

    # A second start finds its data on disk: no new keys, and the first admin token still works.
    second = Launcher(data_dir, redis_port, web_port, "web", log=tmp_path / "second.log")
    checked = []
    try:
        second.wait_ready()
        assert "admin token" not in second.output()
        assert _status(second.base + "/api/v1/queue", admin) == 200
        # Checks answered the moment before Ctrl-C: written behind their answers, they must still be stored.
        for n in range(5):
            req = urllib.request.Request(second.base + "/api/v1/check", method="POST",
                                         data=json.dumps({"content": f"last words {n}"}).encode(),
                                         headers={"Authorization": f"Bearer {site_key}",
                                                  "Content-Type": "application/json"})
            with urllib.request.urlopen(req, timeout=5) as resp:
                checked.append(json.loads(resp.read())["id"])
    finally:
        code = second.stop(signal.SIGINT)  # what Ctrl-C sends
    assert code in (0, 130), second.output()[-3000:]
    assert port_is_free(redis_port) and port_is_free(web_port)

    third = Launcher(data_dir, redis_port, web_port, "web", log=tmp_path / "third.log")
    try:
        third.wait_ready()
        assert [_status(f"{third.base}/api/v1/checks/{check_id}", admin) for check_id in checked] == [200] * 5
    finally:
        third.stop(signal.SIGTERM)
    assert port_is_free(redis_port) and port_is_free(web_port)


def test_with_redis_url_the_launcher_starts_no_redis(tmp_path):
    url = re.sub(r"/\d+$", "", os.environ.get("WINNOW_TEST_REDIS_URL", "redis://127.0.0.1:6379/13")) + f"/{OPS_DB}"
    client = redis.Redis.from_url(url)
    client.flushdb()
    web_port = free_port()
    launcher = Launcher(tmp_path / "var", free_port(), web_port, "web", log=tmp_path / "launcher.log",
                        redis_url=url)
    try:
        launcher.wait_ready()
        out = launcher.output()
        assert "from REDIS_URL; no Redis started" in out
        admin = re.search(r"admin token\s+(wm_\S+)", out).group(1)
        assert _status(launcher.base + "/api/v1/queue", admin) == 200
        assert not (tmp_path / "var" / "redis").exists()
    finally:
        launcher.stop(signal.SIGTERM)
        client.flushdb()
        client.close()
    assert port_is_free(web_port)


def test_embedded_redis_moves_to_a_free_port_when_its_port_is_taken(tmp_path):
    taken = free_port()
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", taken))
        holder.listen()
        server = EmbeddedRedis(tmp_path / "redis", port=taken)
        server.start()
        try:
            client = redis.Redis(port=server.port)
            assert server.port != taken and client.ping()
            client.close()
        finally:
            server.stop()
    assert server.process.returncode == 0


def test_unknown_procfile_process_is_refused():
    result = subprocess.run([sys.executable, "-m", "service.launcher", "nonsense"], cwd=ROOT, capture_output=True,
                            text=True, timeout=60, env={**os.environ, "REDIS_URL": "redis://127.0.0.1:1/0"})
    assert result.returncode == 2 and "unknown Procfile process" in result.stderr


def test_a_busy_web_port_is_named_before_anything_starts(tmp_path):
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        result = subprocess.run([sys.executable, "-m", "service.launcher", "web"], cwd=ROOT, capture_output=True,
                                text=True, timeout=60, env={**os.environ, "REDIS_URL": "redis://127.0.0.1:1/0",
                                                            "WINNOW_BIND": f"127.0.0.1:{port}",
                                                            "WINNOW_DATA_DIR": str(tmp_path)})
    assert result.returncode == 1 and f"127.0.0.1:{port} is already in use" in result.stderr
