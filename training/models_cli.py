"""`winnow models list|show|promote|publish|rollback` and `winnow retrain`: the registry and the retrain job from a
shell.

Same domain calls as the HTTP API (training.registry, training.jobs); registered in training.cli.COMMANDS.
"""
from __future__ import annotations

import datetime as dt
import getpass
import json
import os
import sys
import time

from training.cli import CommandError


def add_parser(subparsers) -> None:
    models = subparsers.add_parser("models", help="list, inspect, promote or roll back model versions")
    sub = models.add_subparsers(dest="models_command", metavar="ACTION", required=True)
    p = sub.add_parser("list", help="every kept version, newest first; * marks the serving one")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(handler=cmd_list)
    p = sub.add_parser("show", help="one version's metadata as JSON")
    p.add_argument("version")
    p.set_defaults(handler=cmd_show)
    p = sub.add_parser("promote", help="serve VERSION from now on (every web worker within seconds)")
    p.add_argument("version")
    p.add_argument("--reason", default="promoted by hand")
    p.set_defaults(handler=cmd_promote)
    p = sub.add_parser("publish", help="add a model file written by `winnow train` (of this deployment) to the "
                       "registry, as a candidate or, with --promote, serving")
    p.add_argument("path", help="the .joblib artifact (its metadata JSON beside it), or `starter`")
    p.add_argument("--promote", action="store_true", help="serve it from now on (every web worker within seconds)")
    p.add_argument("--reason", default="")
    p.set_defaults(handler=cmd_publish)
    p = sub.add_parser("rollback", help="serve again the version the current one replaced")
    p.add_argument("--reason", default="")
    p.set_defaults(handler=cmd_rollback)

    p = subparsers.add_parser("retrain", help="retrain from the stored labels (queued for a worker by default)")
    p.add_argument("--reason", default="asked for from the command line")
    p.add_argument("--wait", action="store_true", help="follow the queued job until it ends")
    p.add_argument("--now", action="store_true", help="run here instead of on a worker (still single flight)")
    p.add_argument("--full", action="store_true", help="refit on every label even when a few new ones could "
                   "update the serving model")
    p.add_argument("--json", action="store_true", help="print the whole run record (metrics, curves) as JSON")
    p.set_defaults(handler=cmd_retrain)


def _context():
    import redis

    from training.settings import Settings, embedded_redis_url

    try:
        settings = Settings.from_env()
    except (ValueError, OSError) as exc:
        raise CommandError(f"bad settings: {exc}", 2) from None
    if not (os.environ.get("WINNOW_REDIS_URL") or os.environ.get("REDIS_URL")) \
            and embedded_redis_url(settings.data_dir) is None:
        # Not some Redis that happens to listen on the default port: it may be anyone's.
        raise CommandError(f"no Redis to use: REDIS_URL is unset and no `make run` is running with its data in "
                           f"{settings.data_dir} (its embedded Redis is found by itself); start `make run`, or "
                           "set REDIS_URL", 3)
    client = redis.Redis.from_url(settings.redis_url)
    try:
        client.ping()
    except redis.RedisError as exc:
        raise CommandError(f"cannot reach Redis at {settings.redis_url}: {exc}", 3) from None
    return settings, client


def _registry():
    from training.registry import Registry

    settings, client = _context()
    return Registry.from_settings(client, settings)


def _who() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli"


def _when(ts) -> str:
    if not ts:
        return "-"
    return dt.datetime.fromtimestamp(float(ts), dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def cmd_list(args) -> int:
    versions = _registry().list()
    if args.json:
        print(json.dumps(versions, indent=2))
        return 0
    if not versions:
        print("no model versions yet (the first web process or retrain seeds the registry with the starter model)")
        return 0
    print(f"  {'version':<8} {'created (UTC)':<19} {'status':<9} {'labels':>7} {'mcc':>7}  promoted by / reason")
    for m in versions:
        judged = (m.get("metrics") or {}).get("challenger") or {}
        mcc = judged.get("mcc")
        # Judged on labels of one class (no ROC AUC then), every model has an MCC of 0: the reason says what counted.
        shown = "-" if mcc is None else "n/a" if "roc_auc" in judged and judged["roc_auc"] is None else f"{mcc:.4f}"
        labels = (m.get("counts") or {}).get("labels", "-")
        mark = "*" if m["serving"] else " "
        note = m.get("promoted_by") or m.get("published_by") or ""
        if m.get("promote_reason"):
            note += f": {m['promote_reason']}"
        print(f"{mark} {m['version']:<8} {_when(m.get('created_at')):<19} {m.get('status', ''):<9} {labels!s:>7} "
              f"{shown:>7}  {note}")
    return 0


def cmd_show(args) -> int:
    from training.registry import UnknownVersion

    try:
        print(json.dumps(_registry().get(args.version), indent=2))
    except UnknownVersion as exc:
        raise CommandError(str(exc), 4) from None
    return 0


def cmd_promote(args) -> int:
    from training.registry import RegistryError

    try:
        info = _registry().promote(args.version, by=_who(), reason=args.reason)
    except RegistryError as exc:  # unknown, or an artifact no web node would load
        raise CommandError(str(exc), 4) from None
    print(f"{info['version']} already serves; nothing changed" if info.get("unchanged")
          else f"{info['version']} is now serving")
    return 0


def cmd_publish(args) -> int:
    """A model trained by hand becomes a registry version. It is loaded first, so one another deployment signed,
    changed since it was written or built by another scikit-learn is refused (exit 2) before anything is stored.
    Promoting it is the caller's decision, as with `models promote`: no gate judges it against the serving one."""
    from pathlib import Path

    from training.cli import _load_model

    model = _load_model(args.path)
    registry = _registry()
    name = Path(args.path).name
    counts = dict(model.meta.get("counts") or {})
    meta = {"origin": f"winnow models publish {name}",
            "counts": {"labels": sum(v for v in counts.values() if isinstance(v, int)), **counts},
            "trained_at": model.meta.get("created_at"), "corpora": model.meta.get("corpora"),
            "metrics": {"trained": model.meta.get("metrics") or {}}}
    reason = args.reason or f"published from {name}"
    version = registry.publish(model, meta, promoted_by=_who(), reason=reason, promote=args.promote)
    if args.promote:
        print(f"{version} is now serving")
    else:
        print(f"{version} published as a candidate; `winnow models promote {version}` serves it")
    return 0


def cmd_rollback(args) -> int:
    from training.registry import RegistryError

    try:
        info = _registry().rollback(by=_who(), reason=args.reason)
    except RegistryError as exc:
        raise CommandError(str(exc), 4) from None
    print(f"rolled back: {info['version']} is now serving")
    return 0


def _print_run(record: dict, as_json: bool) -> None:
    """A finished retrain: one line saying what was decided and why, or the whole record with --json."""
    if as_json:
        print(json.dumps(record, indent=2, default=str))
        return
    version = record.get("version") or record.get("challenger_version") or ""
    took = record.get("duration_s")
    print(f"{record.get('decision', '?')}{' ' + version if version else ''}: {record.get('why', '')}"
          f"{f' ({took:.1f} s)' if isinstance(took, (int, float)) else ''}")


def cmd_retrain(args) -> int:
    import redis

    from training import jobs

    settings, client = _context()
    if args.now:
        try:
            record = jobs.run_here(client, settings, reason=args.reason, requested_by=_who(), full=args.full)
        except jobs.RetrainBusy as exc:
            raise CommandError(str(exc), 5) from None
        except jobs.LostLock as exc:
            raise CommandError(f"the retrain stopped without promoting anything: {exc} (Redis stalled longer than "
                               "WINNOW_RETRAIN_LOCK_SECONDS)", 1) from None
        except redis.RedisError as exc:
            raise CommandError(f"Redis failed during the retrain; nothing was promoted: {exc}", 3) from None
        _print_run(record, args.json)
        return 0 if record["decision"] != "error" else 1
    job_id = jobs.enqueue_retrain(client, settings, reason=args.reason, by=_who(), full=args.full)
    if not args.wait:
        print(job_id)
        return 0
    # Followed to the end: stdout is the result alone (one line, or the JSON record), the rest goes to stderr.
    print(f"{job_id} queued", file=sys.stderr)
    last = None
    while True:
        status = jobs.job_status(client, job_id) or {"status": "gone"}
        line = f"{status['status']}: {status.get('stage') or ''} ({float(status.get('progress') or 0):.0%})"
        if line != last:
            print(line, file=sys.stderr)
            last = line
        if status.get("continued_as"):  # its worker died: the run goes on as another job, followed from here
            job_id = status["continued_as"]
            print(f"its worker died; the run continues as {job_id}", file=sys.stderr)
            last = None
            continue
        if status["status"] in ("finished", "failed", "stopped", "canceled", "gone"):
            break
        time.sleep(1)
    if status["status"] == "finished":
        _print_run(status["result"], args.json)
        return 1 if (status["result"] or {}).get("decision") in ("abandoned", "error") else 0
    raise CommandError(f"retrain {job_id} {status['status']}: {status.get('error') or ''}", 1)
