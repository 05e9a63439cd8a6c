"""`winnow keys create|list|revoke` and `winnow import FILE... --site URL`: keys and labels from a shell.

Registered in training.cli.COMMANDS. `keys create` prints the new key as the last line of its output, so a script
can take it with `tail -n 1`; the key is shown only this once (Redis keeps its SHA-256 digest).
"""
from __future__ import annotations

import datetime as dt
import sys

from training.cli import CommandError, _import, _parsed, _print_dedupe
from training.models_cli import _context, _who

IMPORT_CHUNK = 1000  # labels per Redis transaction


def add_parser(subparsers) -> None:
    keys = subparsers.add_parser("keys", help="create, list or revoke site keys and moderator/admin tokens")
    sub = keys.add_subparsers(dest="keys_command", metavar="ACTION", required=True)
    p = sub.add_parser("create", help="make a key; prints it as the last line (shown only once)")
    p.add_argument("--site", default="", help="the site URL (required for a site key; scopes a moderator token)")
    p.add_argument("--role", choices=("site", "moderator", "admin"), default="site")
    p.add_argument("--name", default="", help="who or what the key is for (shown in audit trails)")
    p.set_defaults(handler=cmd_create)
    p = sub.add_parser("list", help="every key's id, role, site, name and state (never the key itself)")
    p.add_argument("--site", default=None, help="only keys of this site")
    p.set_defaults(handler=cmd_list)
    p = sub.add_parser("revoke", help="revoke a key by its id (effective everywhere within seconds)")
    p.add_argument("id")
    p.set_defaults(handler=cmd_revoke)

    from training import importers

    p = subparsers.add_parser("import", help="load labelled files into the label store of a site",
                              description="Read labelled files through the importers, remove duplicate texts and "
                              "store each comment with its label for SITE. Importing a comment again relabels it "
                              "rather than duplicating it.")
    p.add_argument("data", nargs="+", metavar="FILE")
    p.add_argument("--site", required=True, help="the site the labels belong to")
    p.add_argument("--format", choices=importers.FORMATS, help="the format of every file")
    p.add_argument("--map", metavar="FIELD=COLUMN,...", type=_parsed(importers.parse_mapping),
                   help="columns (CSV) or keys (JSONL) to read")
    p.add_argument("--labels", metavar="spam=VALUE,ham=VALUE,...", type=_parsed(importers.parse_labels),
                   help="label values in the file (default: spam/ham and 1/0)")
    p.add_argument("--source", help="source name recorded for every label (default: from the file)")
    p.add_argument("--by", default=None, help="who the audit trail names (default: cli:<user>)")
    p.set_defaults(handler=cmd_import)


def _keystore():
    from training.apikeys import KeyStore

    settings, client = _context()
    return KeyStore(client, cache_seconds=0)


def cmd_create(args) -> int:
    from training.schema import ValidationError

    if args.role == "site" and not (args.site or "").strip():
        raise CommandError("a site key needs its site: --site URL (such as https://blog.example.com)", 2)
    try:
        plain, record = _keystore().create(args.site, args.role, args.name)
    except ValidationError as exc:
        raise CommandError(f"--{exc.field}: {exc.message}", 2) from None
    scope = record.site or "every site"
    print(f"created {record.role} key {record.id} for {scope}" + (f" ({record.name})" if record.name else ""))
    print("store it now: it is not shown again")
    print(plain)
    return 0


def cmd_list(args) -> int:
    from training.schema import ValidationError

    try:
        records = _keystore().list(args.site)
    except ValidationError as exc:
        raise CommandError(f"--{exc.field}: {exc.message}", 2) from None
    print(f"{'ID':<10} {'ROLE':<10} {'STATE':<8} {'CREATED':<20} {'SITE':<40} NAME")
    for r in records:
        created = dt.datetime.fromtimestamp(r.created_at, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
        print(f"{r.id:<10} {r.role:<10} {'revoked' if r.revoked else 'active':<8} {created:<20} "
              f"{r.site or '*':<40} {r.name}")
    return 0


def cmd_revoke(args) -> int:
    if not _keystore().revoke(args.id):
        raise CommandError(f"no key with id {args.id}", 1)
    print(f"revoked {args.id}; web processes stop accepting it within seconds")
    return 0


def cmd_import(args) -> int:
    import redis

    from training import importers, labels
    from training.apikeys import normalise_site
    from training.schema import ValidationError

    try:
        site = normalise_site(args.site)
    except ValidationError as exc:
        raise CommandError(f"--site: {exc.message}", 2) from None
    settings, client = _context()
    result = _import(args, sys.stderr)
    records, report = importers.dedupe(result.records)
    _print_dedupe(report, sys.stderr)
    by = args.by or _who()
    store = labels.LabelStore(client)
    stored = []
    try:
        for start in range(0, len(records), IMPORT_CHUNK):
            chunk = [labels.for_comment(site, r.comment, r.label, by=by, source=f"import:{r.source}")
                     for r in records[start:start + IMPORT_CHUNK]]
            stored += store.put_many(chunk)
    except redis.RedisError as exc:
        raise CommandError(f"Redis refused the labels after {len(stored)} were stored: {exc}", 3) from None
    labels.after_labels(client, settings, stored)
    new = sum(1 for r in stored if r.previous is None)
    changed = sum(1 for r in stored if r.previous is not None and r.previous != r.label)
    print(f"{site}: {len(stored)} labels stored ({new} new, {changed} relabelled, "
          f"{len(stored) - new - changed} unchanged), {len(result.errors)} rows with errors")
    return 0
