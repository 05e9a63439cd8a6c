"""HTTP serving speed: wrk on loopback against gunicorn + a private Redis, the bare ping route vs POST /api/v1/check.

Both routes go through the same stack (request id, JSON log line, metrics); check adds auth, the rate limiter (the
ops routes are exempt), the model and the write-behind store. Redis runs exactly as `make run` starts it (AOF,
appendfsync always). The same gunicorn workers then serve bench/bare_app.py, Flask with nothing but the scorer: the
ceiling any Flask check route can reach here.
`python -m bench http` writes bench/out/http.md; WINNOW_BENCH_SECONDS sets each run's length (default 4) and
WINNOW_BENCH_ROUNDS how many rounds of ping then check each connection count gets (default 3; medians are shown).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import redis

from bench.__main__ import stamp
from service.launcher import EmbeddedRedis, free_port
from training.apikeys import KeyStore

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out"
APP = "service.app:create_app()"
BARE_APP = "bench.bare_app:create_app()"
CONNECTIONS = (1, 16, 64)
SITE = "https://bench.example.org"

# Realistic comments a blog platform would send: a mix of ham and spam, with the usual metadata.
COMMENTS = [
    {"content": "Thanks for the detailed write-up. I followed the steps on Debian 12 and the migration went fine, "
                "although I had to bump the shared_buffers setting before the import would finish.",
     "author": "Maria K.", "author_email": "maria@example.net", "user_ip": "203.0.113.7"},
    {"content": "Cheap replica watches, best prices online!!! Visit http://watches-deal.example.biz and get 70% off "
                "today only, free shipping worldwide http://watches-deal.example.biz/sale",
     "author": "best deals", "author_email": "sales@watches-deal.example.biz", "author_url":
     "http://watches-deal.example.biz", "user_ip": "198.51.100.23"},
    {"content": "I disagree with the part about caching. In my experience the invalidation cost outweighs the "
                "gains for write-heavy tables; did you measure with a realistic write ratio?",
     "author": "tom", "author_email": "tom@example.org", "user_ip": "192.0.2.44"},
    {"content": "Check out my channel!! subscribe and I will subscribe back, free followers "
                "http://subs4subs.example.com", "author": "channel guy", "user_ip": "198.51.100.99"},
    {"content": "Lovely photos. The light on the third one is wonderful; which lens did you use?",
     "author": "Ana", "author_email": "ana@example.com", "user_ip": "203.0.113.150"},
    {"content": "Earn $5000 a week working from home, no experience needed, click here http://money.example.info "
                "to start right now", "author": "Jenny", "author_email": "jenny1987@example.info",
     "user_ip": "192.0.2.201"},
]
_COMMON = {"user_agent": "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
           "permalink": SITE + "/2025/05/postgres-migration/", "comment_type": "comment",
           "referrer": SITE + "/2025/05/postgres-migration/"}


def _lua_script(key: str) -> str:
    """The wrk script for POST /api/v1/check: the same comments in turn, each request built once in init() (as wrk's
    own documentation advises), so the load generator spends about as little per request as it does on /ping."""
    bodies = [json.dumps({**_COMMON, **c}) for c in COMMENTS]
    lines = ",\n".join(f"  [==[{b}]==]" for b in bodies)
    return (
        'wrk.method = "POST"\n'
        'wrk.headers["Content-Type"] = "application/json"\n'
        f'wrk.headers["Authorization"] = "Bearer {key}"\n'
        f"local bodies = {{\n{lines}\n}}\n"
        "local requests = {}\n"
        "init = function(args)\n"
        "  for n, body in ipairs(bodies) do requests[n] = wrk.format(nil, nil, nil, body) end\n"
        "end\n"
        "local i = 0\n"
        "request = function()\n"
        "  i = i % #requests + 1\n"
        "  return requests[i]\n"
        "end\n"
    )


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if not m:
        raise ValueError(f"unreadable wrk latency {text!r}")
    return float(m.group(1)) * _UNITS[m.group(2)]


def parse_wrk(output: str) -> dict:
    """Requests/s, p50 and p99 (ms), total requests and non-2xx/socket errors from `wrk --latency` output."""
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))
    pct = dict(re.findall(r"^\s+(50|75|90|99)%\s+(\S+)", output, flags=re.M))
    total = int(re.search(r"(\d+) requests in", output).group(1))
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    return {"rps": rps, "p50": _ms(pct["50"]), "p99": _ms(pct["99"]), "requests": total,
            "errors": (int(non2xx.group(1)) if non2xx else 0) + (sum(map(int, sock.groups())) if sock else 0)}


def run_wrk(url: str, connections: int, seconds: float, script: Path | None = None) -> dict:
    wrk = shutil.which("wrk")
    if wrk is None:
        raise RuntimeError("wrk is not installed (Debian package: apt-get install wrk)")
    # One wrk thread: the server needs the machine's two cores more than the load generator does.
    cmd = [wrk, "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--latency", "--timeout", "5s"]
    if script is not None:
        cmd += ["-s", str(script)]
    out = subprocess.run(cmd + [url], capture_output=True, text=True, check=True, timeout=seconds + 30).stdout
    return parse_wrk(out)


class Server:
    """gunicorn on a free loopback port with its own data dir, logging to a file. With `bare`, the same workers
    serve bench/bare_app.py instead of Winnow (no Redis, none of Winnow's gunicorn hooks)."""

    def __init__(self, redis_url: str, data_dir: Path, *, worker_class: str, workers: int | None = None,
                 rate_limit: str = "100000000/minute", bare: bool = False):
        self.worker_class = worker_class
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log_path = data_dir / f"gunicorn-{worker_class}-{self.port}.log"
        env = dict(os.environ, REDIS_URL=redis_url, WINNOW_BIND=f"127.0.0.1:{self.port}",
                   WINNOW_DATA_DIR=str(data_dir), WINNOW_WEB_WORKER_CLASS=worker_class,
                   WINNOW_RATE_LIMIT=rate_limit, PYTHONUNBUFFERED="1")
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        if workers:
            env["WINNOW_WEB_WORKERS"] = str(workers)
        if worker_class == "sync":  # more threads would make gunicorn run it as gthread
            env["WINNOW_WEB_THREADS"] = "1"
        self._log = open(self.log_path, "wb")
        gunicorn = str(Path(sys.executable).parent / "gunicorn")
        if bare:  # the worker settings service/gunicorn_conf.py gives Winnow's web process
            command = [gunicorn, "--worker-class", worker_class, "--workers", str(workers or _workers()),
                       "--threads", _threads_each(worker_class), "--keep-alive", "5", "--bind", f"127.0.0.1:{self.port}",
                       "--error-logfile", "-", BARE_APP]
        else:
            command = [gunicorn, "--config", str(ROOT / "service" / "gunicorn_conf.py"),
                       os.environ.get("WINNOW_BENCH_APP", APP)]
        self.process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout: float = 180.0, path: str = "/readyz") -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"gunicorn exited; see {self.log_path}:\n{self.log_path.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(self.base + path, timeout=2) as resp:
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.2)
        raise RuntimeError(f"gunicorn not ready within {timeout:.0f} s; see {self.log_path}")

    def wait_settled(self, timeout: float = 180.0) -> None:
        """Wait until every worker has booted: /readyz answers as soon as one has, and a worker still importing
        scikit-learn and loading the model would take the cores from the measured runs. Booting burns CPU; a
        booted worker waiting for requests burns none."""
        deadline = time.monotonic() + timeout
        quiet = 0
        last = self._cpu_ticks()
        while time.monotonic() < deadline and quiet < 3:
            time.sleep(0.5)
            now = self._cpu_ticks()
            quiet = quiet + 1 if now - last <= 5 else 0
            last = now
        if quiet < 3:
            raise RuntimeError(f"gunicorn workers still busy after {timeout:.0f} s; see {self.log_path}")

    def _cpu_ticks(self) -> int:
        """User + system clock ticks of the master and its workers so far."""
        pids = [self.process.pid]
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        if children.exists():
            pids += [int(p) for p in children.read_text().split()]
        total = 0
        for pid in pids:
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:  # a worker exiting right now
                continue
            total += int(fields[11]) + int(fields[12])
        return total

    def spread(self) -> list[int]:
        """How many open connections each worker holds now, most first (`ss`; empty where it is missing)."""
        try:
            out = subprocess.run(["ss", "-tnpH", "state", "established", f"( sport = :{self.port} )"],
                                 capture_output=True, text=True, timeout=10).stdout
        except (OSError, subprocess.SubprocessError):
            return []
        per_pid: dict[str, int] = {}
        for pid in re.findall(r"pid=(\d+)", out):
            per_pid[pid] = per_pid.get(pid, 0) + 1
        try:
            workers = len(Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children").read_text().split())
        except OSError:  # a kernel without the children file
            workers = 0
        counts = sorted(per_pid.values(), reverse=True)
        return counts + [0] * max(0, workers - len(counts))

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()


_TCK = os.sysconf("SC_CLK_TCK")


def _machine_ticks() -> tuple[int, int]:
    """(busy, total) clock ticks of every core so far, from /proc/stat; steal (a VM's cores lent to others) counts
    as busy."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    user, nice, system, idle, iowait, irq, softirq, steal = values
    busy = user + nice + system + irq + softirq + steal
    return busy, busy + idle + iowait


def _process_ticks(pid: int) -> int:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0
    return int(fields[11]) + int(fields[12])


class Interference:
    """How much of the machine other programs took while the measured runs ran: whatever the machine spent busy
    beyond gunicorn, Redis and wrk themselves. Figures taken while this is high are not comparable."""

    def __init__(self, server: Server, redis_pid: int):
        self.server, self.redis_pid = server, redis_pid
        self.foreign = self.total = 0

    def _ours(self) -> tuple[int, int, int]:
        """CPU ticks so far of gunicorn (master and workers), Redis and wrk."""
        children = os.times()
        wrk = round((children.children_user + children.children_system) * _TCK)
        return self.server._cpu_ticks(), _process_ticks(self.redis_pid), wrk

    def run(self, fn, *args) -> dict:
        """fn's result plus `cpu_us`: CPU microseconds per request that gunicorn, Redis and wrk each spent."""
        busy0, total0 = _machine_ticks()
        ours0 = self._ours()
        result = fn(*args)
        busy1, total1 = _machine_ticks()
        spent = [b - a for a, b in zip(ours0, self._ours())]
        self.foreign += max(0, (busy1 - busy0) - sum(spent))
        self.total += total1 - total0
        n = max(1, result["requests"])
        result["cpu_us"] = dict(zip(("gunicorn", "redis", "wrk"), (t / _TCK / n * 1e6 for t in spent)))
        return result

    @property
    def share(self) -> float:
        return self.foreign / self.total if self.total else 0.0


def _measure(server: Server, script: Path, seconds: float, redis_pid: int, connections=CONNECTIONS,
             rounds: int = 3) -> dict:
    """Each connection count in `rounds` rounds of ping then check, run back to back so each round's ratio compares
    like with like; the tables show medians. Which worker a kept-alive connection lands on is luck of the draw,
    and one run's figures swing with it (a round where most connections share one worker is capped at one core)."""
    results: dict = {}
    # Warm both routes (imports, model pages, connection pools) before anything is timed.
    run_wrk(server.base + "/ping", 4, 1)
    run_wrk(server.base + "/api/v1/check", 4, 1, script)
    watch = Interference(server, redis_pid)
    keeps_alive = server.worker_class != "sync"  # sync workers close every connection after its answer
    for c in connections:
        runs: dict[str, list] = {"ping": [], "check": [], "spread": []}
        for _ in range(rounds):
            runs["ping"].append(watch.run(run_wrk, server.base + "/ping", c, seconds))
            # Kept-alive connections stay with the worker that accepted them: how evenly they landed explains
            # the tail.
            spread = threading.Timer(seconds / 2, lambda: runs["spread"].append(server.spread()))
            if keeps_alive:
                spread.start()
            runs["check"].append(watch.run(run_wrk, server.base + "/api/v1/check", c, seconds, script))
            if keeps_alive:
                spread.join()
        results[("ping", c)] = _median_run(runs["ping"])
        results[("check", c)] = _median_run(runs["check"])
        results[("ratio", c)] = [k["rps"] / p["rps"] for p, k in zip(runs["ping"], runs["check"])]
        results[("spread", c)] = [s for s in runs["spread"] if s]
    results["other_programs"] = watch.share
    results["rounds"] = rounds
    return results


def _ceiling(server: Server, script: Path, seconds: float, redis_pid: int, rounds: int = 3,
             connections: int = 16) -> dict:
    """bench/bare_app.py at `connections`: rounds of ping, then check, then check without reasons, back to back."""
    run_wrk(server.base + "/ping", 4, 1)
    run_wrk(server.base + "/check", 4, 1, script)
    watch = Interference(server, redis_pid)
    routes = {"ping": "/ping", "check": "/check", "check, no reasons": "/check?reasons=0"}
    runs: dict[str, list] = {name: [] for name in routes}
    for _ in range(rounds):
        for name, path in routes.items():
            runs[name].append(watch.run(run_wrk, server.base + path, connections, seconds,
                                        None if name == "ping" else script))
    results = {name: _median_run(r) for name, r in runs.items()}
    failed = {name: r["errors"] for name, r in results.items() if r["errors"]}
    if failed:  # a ceiling of error answers would mean nothing
        raise RuntimeError(f"bench/bare_app.py answered errors {failed}; see {server.log_path}")
    for name in ("check", "check, no reasons"):
        results[name]["ratios"] = [k["rps"] / p["rps"] for p, k in zip(runs["ping"], runs[name])]
    results["other_programs"] = watch.share
    return results


def _ceiling_table(ceiling: dict, winnow: dict, connections: int = 16) -> str:
    rows = [f"| at {connections} connections | req/s | p50 / p99 (ms) | of its ping (rounds' range) | "
            "CPU µs per request (gunicorn) |", "|---|---:|---:|---:|---:|"]

    def row(name: str, result: dict, ratios: list[float] | None) -> str:
        share = "" if ratios is None else f"{statistics.median(ratios):.0%} ({min(ratios):.0%}–{max(ratios):.0%})"
        return (f"| {name} | {result['rps']:,.0f} | {result['p50']:.2f} / {result['p99']:.2f} | {share} | "
                f"{result['cpu_us']['gunicorn']:,.0f} |")

    rows.append(row("bare Flask: ping", ceiling["ping"], None))
    rows.append(row("bare Flask: check (score and 8 reasons)", ceiling["check"], ceiling["check"]["ratios"]))
    rows.append(row("bare Flask: check without reasons", ceiling["check, no reasons"],
                    ceiling["check, no reasons"]["ratios"]))
    rows.append(row("Winnow: ping (table above)", winnow[("ping", connections)], None))
    rows.append(row("Winnow: check (table above)", winnow[("check", connections)], winnow[("ratio", connections)]))
    return "\n".join(rows)


def _ceiling_reading(ceiling: dict, ratio16: float, at16: dict) -> str:
    bare = statistics.median(ceiling["check"]["ratios"])
    bare_plain = statistics.median(ceiling["check, no reasons"]["ratios"])
    text = (f"Scoring a comment in Flask on this machine reaches {bare:.0%} of a bare ping ({bare_plain:.0%} without "
            f"the reasons) with a p99 of {ceiling['check']['p99']:.1f} ms; Winnow's check, with its key, policy, "
            f"stored record, log line, metrics and rate limit, reaches {ratio16:.0%} with a p99 of "
            f"{at16['p99']:.1f} ms. ")
    if bare < 0.75:
        text += ("The 75 % target is beyond the scorer in this framework here, whatever the rest of the check "
                 "costs: it would need scoring with reasons to cost under a third of what a ping costs.")
    else:
        text += "The scorer alone leaves room for the 75 % target here; the rest of the check path does not."
    return text


def _median_run(runs: list[dict]) -> dict:
    """The median of each figure over the rounds; requests and errors summed."""
    return {"rps": statistics.median(r["rps"] for r in runs), "p50": statistics.median(r["p50"] for r in runs),
            "p99": statistics.median(r["p99"] for r in runs), "requests": sum(r["requests"] for r in runs),
            "errors": sum(r["errors"] for r in runs),
            "cpu_us": {k: statistics.median(r["cpu_us"][k] for r in runs) for k in runs[0]["cpu_us"]}}


def _table(results: dict, connections=CONNECTIONS) -> str:
    rows = ["| connections | ping req/s | ping p50 / p99 (ms) | check req/s | check p50 / p99 (ms) | "
            "check / ping (rounds' range) | CPU µs per ping: gunicorn / Redis / wrk | "
            "CPU µs per check: gunicorn / Redis / wrk |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for c in connections:
        p, k, ratios = results[("ping", c)], results[("check", c)], results[("ratio", c)]
        errors = f" ({k['errors']} errors)" if k["errors"] else ""
        spread = f" ({min(ratios):.0%}–{max(ratios):.0%})" if len(ratios) > 1 else ""
        rows.append(f"| {c} | {p['rps']:,.0f} | {p['p50']:.2f} / {p['p99']:.2f} | {k['rps']:,.0f}{errors} | "
                    f"{k['p50']:.2f} / {k['p99']:.2f} | {statistics.median(ratios):.0%}{spread} | {_cpu(p)} | "
                    f"{_cpu(k)} |")
    spreads = [f"{c}: " + ", ".join(" / ".join(map(str, s)) for s in results[("spread", c)]) for c in connections
               if results.get(("spread", c))]
    if spreads:
        rows += ["", "Open connections per worker halfway through each round's check run (connections: most / ... / "
                 "fewest, one group per round): " + "; ".join(spreads) + "."]
    return "\n".join(rows)


def _cpu(result: dict) -> str:
    return " / ".join(f"{us:,.0f}" for us in result["cpu_us"].values())


def _workers() -> str:
    return os.environ.get("WINNOW_WEB_WORKERS") or str(2 * (os.cpu_count() or 1))


def _threads_each(worker_class: str) -> str:
    return "1" if worker_class == "sync" else os.environ.get("WINNOW_WEB_THREADS") or "4"


def _threads(worker_class: str) -> str:
    threads = _threads_each(worker_class)
    return f" of {threads} thread{'s' if threads != '1' else ''} each"


def _interference(results: dict) -> str:
    share = results["other_programs"]
    note = " (a shared, busy machine: these figures are low and noisy)" if share >= 0.10 else ""
    return f"Other programs on the machine took {share:.0%} of its CPU during these runs{note}."


def main() -> str:
    seconds = float(os.environ.get("WINNOW_BENCH_SECONDS", "4"))
    rounds = max(1, int(os.environ.get("WINNOW_BENCH_ROUNDS", "3")))
    OUT.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="winnow-bench-http-"))
    store = EmbeddedRedis(tmp / "redis", port=free_port())
    store.start()
    servers: list[Server] = []
    try:
        client = redis.Redis.from_url(store.url)
        key, _ = KeyStore(client).create(SITE, "site", name="bench")
        client.close()
        script = tmp / "check.lua"
        script.write_text(_lua_script(key))

        tables = {}
        for worker_class in ("gthread", "sync"):
            print(f"  gunicorn {worker_class} workers ...", flush=True)
            server = Server(store.url, tmp, worker_class=worker_class)
            servers.append(server)
            server.wait_ready()
            server.wait_settled()
            tables[worker_class] = _measure(server, script, seconds, store.process.pid, rounds=rounds)
            server.stop()

        default = os.environ.get("WINNOW_WEB_WORKER_CLASS", "gthread")
        print(f"  gunicorn {default} workers serving bench/bare_app.py ...", flush=True)
        server = Server(store.url, tmp, worker_class=default, bare=True)
        servers.append(server)
        server.wait_ready(path="/ping")
        server.wait_settled()
        ceiling = _ceiling(server, script, seconds, store.process.pid, rounds=rounds)
        server.stop()

        main_results = tables[default]
        other = "sync" if default == "gthread" else "gthread"
        at16 = main_results[("check", 16)]
        ratio16 = statistics.median(main_results[("ratio", 16)])
        met = ratio16 >= 0.75 and at16["p99"] <= 10.0
        body = [
            f"wrk 1 thread, {seconds:.0f} s per run, {rounds} rounds of ping then check at each connection count "
            "(the tables show each figure's median over the rounds), keep-alive, loopback; gunicorn "
            f"`{default}` workers "
            f"({_workers()} workers{_threads(default)}, as "
            "`make run` starts them) and Redis with AOF `appendfsync always`, all on this machine's cores. `check` "
            f"posts one of {len(COMMENTS)} realistic comments (ham and spam with author, email, IP, user agent, "
            "permalink) with a Bearer site key, each request built once by the wrk script; every check is scored, "
            "stored (write-behind) and counted by the per-key rate limiter. The CPU columns divide each program's "
            "CPU time during the run by the requests served: the machine time a request costs, wherever it is "
            "spent.",
            "",
            _table(main_results),
            "",
            _interference(main_results),
            "",
            f"Targets at 16 connections: check ≥ 75 % of ping — measured **{ratio16:.0%}**; check p99 ≤ 10 ms — "
            f"measured **{at16['p99']:.2f} ms**: " + ("both met." if met else "**not met** in this run.")
            + f" With 16 connections each waiting for its answer, the mean latency is 16 ÷ throughput (Little's law): "
            f"{at16['rps']:,.0f} checks/s means {16 / at16['rps'] * 1000:.1f} ms on average, and the p99 is "
            f"{at16['p99'] / (16 / at16['rps'] * 1000):.1f} times that. A p99 of 10 ms needs well over 1,600 checks/s "
            "and a tail close to the mean.",
            "",
            "**The ceiling.** The same gunicorn workers serving a Flask app with nothing but the fast scorer "
            "(bench/bare_app.py: the JSON body read, the comment parsed and scored with the starter model, the "
            "verdict answered as JSON; no key, no stored record, no log line, no metrics, no rate limiter), measured "
            "right after the runs of both worker classes, in the same way:",
            "",
            _ceiling_table(ceiling, main_results),
            "",
            _interference(ceiling),
            "",
            _ceiling_reading(ceiling, ratio16, at16),
            "",
            f"Same runs with gunicorn `{other}` workers{_threads(other)} (the alternative "
            "`WINNOW_WEB_WORKER_CLASS`; a `sync` worker closes the connection after each answer):",
            "",
            _table(tables[other]),
            "",
            _interference(tables[other]),
        ]
        text = stamp("http", "HTTP serving (wrk)", "\n".join(body))
        (OUT / "http.md").write_text(text)
        print(text)
        return text
    finally:
        for server in servers:
            server.stop()
        store.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
