"""The `winnow` command (also `python -m training`): train, evaluate and score from files, plus the subcommands
other packages register in COMMANDS.

Registering a subcommand is one line in COMMANDS: `(name, "package.module")`. That module exposes
`add_parser(subparsers)`, which adds its subcommand(s) with `subparsers.add_parser(name, help=...)` and sets
`handler=function(args) -> int` (the exit code) via `set_defaults`. A handler raises CommandError for a clear
message and exit code instead of a traceback. Only the chosen command's module is imported, so one slow or broken
module never gets in the way of another command.
"""
from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import sys
from pathlib import Path
from typing import Any, Iterable, Sequence, TextIO

from training.schema import ValidationError, is_text, unique_members

COMMANDS: list[tuple[str, str]] = [
    ("train", "training.cli"),
    ("evaluate", "training.cli"),
    ("score", "training.cli"),
    ("models", "training.models_cli"),
    ("retrain", "training.models_cli"),
    ("keys", "training.keys_cli"),
    ("import", "training.keys_cli"),
]

STARTER_NAME = "starter"  # `--model starter` means the shipped starter model
METRIC_KEYS = ("accuracy", "precision", "recall", "f1", "mcc", "roc_auc", "n", "recall_at_fpr_0_005")
ERRORS_SHOWN = 20


class CommandError(Exception):
    """A failure the user can act on: printed as one line on stderr, no traceback, exit `code`."""

    def __init__(self, message: str, code: int = 1):
        super().__init__(message)
        self.code = code


# --- the command line ----------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    for arg in argv:
        if not is_text(arg):  # bytes that were no UTF-8 (Python keeps them as lone surrogates)
            try:
                shown = arg.encode("utf-8", "surrogateescape")
            except UnicodeEncodeError:
                shown = arg.encode("utf-8", "backslashreplace")
            print(f"winnow: the argument {shown!r} is not valid UTF-8 text (rename a file whose name is not)",
                  file=sys.stderr)
            return 2
    parser = build_parser(_chosen(argv))
    args = parser.parse_args(argv)
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(handler(args) or 0)
    except CommandError as exc:
        print(f"winnow {args.command}: {exc}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        print(f"winnow {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # `winnow score ... | head` closed the pipe: no traceback, and no second one when Python flushes at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The parser with every registered subcommand, or with only the module providing `only`."""
    parser = argparse.ArgumentParser(prog="winnow", description="Winnow comment spam filter: the learning core's "
                                     "command line (train, evaluate, score) and administration.")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    modules = [m for name, m in COMMANDS if only is None or name == only]
    for module_path in dict.fromkeys(modules):
        try:
            module = importlib.import_module(module_path)
        except Exception as exc:  # a broken module must not hide the others from --help
            for name in (n for n, m in COMMANDS if m == module_path):
                sub = subparsers.add_parser(name, help=f"(unavailable: {exc})")
                sub.set_defaults(handler=_unavailable(name, exc))
            continue
        module.add_parser(subparsers)
    return parser


def _chosen(argv: list[str]) -> str | None:
    first = next((a for a in argv if not a.startswith("-")), None)
    return first if first in {name for name, _ in COMMANDS} else None


def _unavailable(name: str, exc: Exception):
    def handler(args) -> int:
        raise CommandError(f"this command cannot load: {type(exc).__name__}: {exc}")
    return handler


def add_parser(subparsers) -> None:
    train = subparsers.add_parser("train", help="train a model from labelled files and write its artifact",
                                  description="Import labelled comments, remove duplicate texts, train, and write "
                                  "a signed artifact (PATH) with its metadata beside it (PATH with a .json suffix).")
    _data_options(train)
    train.add_argument("--out", required=True, metavar="PATH", help="where to write the model artifact")
    train.add_argument("--eval", action="append", metavar="FILE",
                       help="held-out labelled file(s) to measure the new model on; the figures go into its metadata")
    train.add_argument("--c", type=_positive_float, metavar="C",
                       help="regularisation strength (default: chosen by cross-validation inside the training data)")
    train.add_argument("--hash-bits", type=int, choices=range(10, 25), metavar="BITS",
                       help="feature space of 2**BITS hashed features (default: the feature configuration's)")
    train.add_argument("--strict", action="store_true", help="refuse to train if any row had an error")
    train.add_argument("--keep-duplicates", action="store_true", help="train on duplicate texts as they are")
    train.set_defaults(handler=cmd_train)

    evaluate = subparsers.add_parser("evaluate", help="measure a model on labelled files",
                                     description="Score labelled comments with a model and print accuracy, "
                                     "precision, recall, F1, MCC, ROC AUC, n and spam recall at 0.5%% FPR.")
    evaluate.add_argument("--model", required=True, metavar="PATH",
                          help=f"a model artifact, or '{STARTER_NAME}' for the shipped starter model")
    _data_options(evaluate)
    evaluate.add_argument("--dedupe", action="store_true", help="remove duplicate texts before measuring")
    evaluate.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    evaluate.set_defaults(handler=cmd_evaluate)

    score = subparsers.add_parser("score", help="score JSONL comments from stdin, one verdict per line",
                                  description="Read one comment per line (a JSON object with the comment fields; "
                                  "`text` is accepted for `content`, `id` is echoed back) and write one JSON verdict "
                                  "per line. A bad line gets an error object; the exit code is then 1.")
    score.add_argument("--model", required=True, metavar="PATH",
                       help=f"a model artifact, or '{STARTER_NAME}' for the shipped starter model")
    score.add_argument("--reasons", type=int, default=10, metavar="N", help="contributions shown per verdict")
    score.set_defaults(handler=cmd_score)


def _data_options(parser: argparse.ArgumentParser) -> None:
    from training import importers

    parser.add_argument("--data", action="append", required=True, metavar="FILE",
                        help="a labelled file (repeat for several); format detected from its name and content")
    parser.add_argument("--format", choices=importers.FORMATS, help="the format of every --data file")
    parser.add_argument("--map", metavar="FIELD=COLUMN,...", type=_parsed(importers.parse_mapping),
                        help="columns (CSV) or keys (JSONL) to read, e.g. content=CONTENT,label=CLASS,author=AUTHOR")
    parser.add_argument("--labels", metavar="spam=VALUE,ham=VALUE,...", type=_parsed(importers.parse_labels),
                        help="label values in the file, e.g. spam=1,ham=0 (default: spam/ham and 1/0)")
    parser.add_argument("--source", help="source name recorded for every record (default: from the file)")


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError("must be a positive number")
    return value


def _parsed(parse):
    def convert(text: str):
        try:
            return parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    convert.__name__ = parse.__name__.replace("parse_", "")
    return convert


# --- train ---------------------------------------------------------------------------------------------------


def cmd_train(args) -> int:
    from training import importers

    if Path(args.out).suffix.lower() == ".json":
        raise CommandError("--out names the artifact; its metadata goes beside it with a .json suffix", 2)
    result = _import(args, sys.stderr)
    if args.strict and result.errors:
        raise CommandError(f"{len(result.errors)} row error(s) and --strict given; nothing trained")
    records = result.records
    if not args.keep_duplicates:
        records, report = importers.dedupe(records)
        _print_dedupe(report, sys.stderr)
    counts = _label_counts(records)
    if not counts["spam"] or not counts["ham"]:
        raise CommandError(f"training needs both spam and ham examples; have spam {counts['spam']}, "
                           f"ham {counts['ham']}")
    settings = _settings()
    held_out = None
    if args.eval:
        held_out = _import(argparse.Namespace(**{**vars(args), "data": args.eval}), sys.stderr).records
        seen = {importers.normalise_text(r.comment.content) for r in records}
        overlap = sum(importers.normalise_text(r.comment.content) in seen for r in held_out)
        if overlap:
            print(f"warning: {overlap} of {len(held_out)} evaluation texts are also in the training data",
                  file=sys.stderr)
    print(f"training on {len(records)} comments (spam {counts['spam']}, ham {counts['ham']}) ...",
          file=sys.stderr, flush=True)
    try:
        model = _train([r.comment for r in records], [r.label for r in records], [r.source for r in records],
                       c=args.c, hash_bits=args.hash_bits)
    except ValueError as exc:  # the model's own refusal of the data (too few examples of a class)
        raise CommandError(str(exc)) from None
    if held_out is not None:
        figures = _metrics([r.label for r in held_out], _scores(model, [r.comment for r in held_out]))
        model.meta["metrics"] = {**figures, "data": [str(p) for p in args.eval]}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = _save(model, out, settings.secret_key)
    _print_train_summary(records, out, {**model.meta, **meta}, sys.stdout)
    return 0


def _print_train_summary(records, out: Path, meta: Any, stream: TextIO) -> None:
    import collections

    by_source = collections.Counter((r.source, r.label) for r in records)
    print(f"wrote {out}", file=stream)
    for key in ("version", "sha256"):
        if meta.get(key):
            print(f"  {key}: {meta[key]}", file=stream)
    print(f"  trained on {len(records)} comments", file=stream)
    for source in sorted({s for s, _ in by_source}):
        print(f"    {source}: spam {by_source[(source, 'spam')]}, ham {by_source[(source, 'ham')]}", file=stream)
    figures = meta.get("metrics") or {}
    if figures.get("n"):
        print("  held-out: " + ", ".join(f"{k} {_shown(figures.get(k))}" for k in METRIC_KEYS), file=stream)


# --- evaluate ------------------------------------------------------------------------------------------------


def cmd_evaluate(args) -> int:
    from training import importers

    model = _load_model(args.model)
    result = _import(args, sys.stderr)
    records = result.records
    if args.dedupe:
        records, report = importers.dedupe(records)
        _print_dedupe(report, sys.stderr)
    scores = _scores(model, [r.comment for r in records])
    figures = _metrics([1 if r.label == "spam" else 0 for r in records], scores)
    if args.json:
        print(json.dumps({k: figures[k] for k in METRIC_KEYS}))
    else:
        for key in METRIC_KEYS:
            print(f"{_METRIC_NAMES[key]:<28} {_shown(figures[key])}")
    return 0


def _shown(value: Any) -> str:
    if isinstance(value, int):
        return str(value)
    return "n/a" if value is None else f"{value:.4f}"


_METRIC_NAMES = {"accuracy": "accuracy", "precision": "precision (spam)", "recall": "recall (spam)",
                 "f1": "F1 (spam)", "mcc": "MCC", "roc_auc": "ROC AUC", "n": "n",
                 "recall_at_fpr_0_005": "spam recall at 0.5% FPR"}


# --- score ---------------------------------------------------------------------------------------------------


def cmd_score(args) -> int:
    from training.schema import ALIASES, Comment

    model = _load_model(args.model)
    settings = _settings()
    comment_keys = set(Comment.__dataclass_fields__) | set(ALIASES) | {"text"}
    bad = 0
    # Bytes, decoded line by line: one line that is not UTF-8 is that line's error, whatever the locale says.
    stdin = getattr(sys.stdin, "buffer", sys.stdin)
    for number, raw in enumerate(stdin, 1):
        out: dict[str, Any] = {"line": number}
        try:
            line = raw.decode("utf-8") if isinstance(raw, bytes) else raw
        except UnicodeDecodeError as exc:
            line = None
            out["error"] = {"field": "body", "message": f"not valid UTF-8 (byte {exc.start + 1} of the line)"}
        if line is not None:
            if number == 1:
                line = line.lstrip("\ufeff")
            if not line.strip():
                continue
            try:
                obj = json.loads(line, object_pairs_hook=unique_members, parse_constant=_no_constant)
                if isinstance(obj, dict):
                    obj = dict(obj)
                    if "id" in obj:
                        out["id"] = obj.pop("id")
                    if "label" in obj:
                        # A line of a labelled file, read as `train` and `evaluate` read it: the label is echoed
                        # for comparison and keys that are no comment field (the corpora's `date`) are left out.
                        out["label"] = obj.pop("label")
                        obj = {k: v for k, v in obj.items() if k in comment_keys}
                    if "text" in obj and "content" not in obj:
                        obj["content"] = obj.pop("text")
                comment = Comment.from_dict(obj)
            except json.JSONDecodeError as exc:
                out["error"] = {"field": "body", "message": f"not valid JSON ({exc.msg} at column {exc.pos + 1})"}
            except ValidationError as exc:
                out["error"] = exc.to_dict()
            except RecursionError:
                out["error"] = {"field": "body", "message": "nests too deeply"}
        if "error" in out:
            bad += 1
        else:
            out.update(_verdict(model, comment, settings, args.reasons))
        sys.stdout.write(json.dumps(out, ensure_ascii=False) + "\n")
        sys.stdout.flush()
    if bad:
        print(f"winnow score: {bad} line(s) could not be scored", file=sys.stderr)
    return 1 if bad else 0


def _no_constant(name: str) -> Any:
    raise ValidationError("body", f"{name} is not a number in JSON")


def verdict_name(score: float, settings) -> str:
    if score >= settings.spam_threshold:
        return "spam"
    if score >= settings.unsure_threshold:
        return "unsure"
    return "ham"


# --- shared steps --------------------------------------------------------------------------------------------


def _import(args, stream: TextIO):
    """Read every --data file with a progress bar, print the problems, refuse files with nothing usable."""
    from tqdm import tqdm

    from training import importers

    total = importers.ImportResult()
    empty = []
    for path in args.data:
        size = Path(path).stat().st_size if Path(path).is_file() else 0
        with tqdm(total=size, unit="B", unit_scale=True, desc=Path(path).name, file=stream, leave=False,
                  disable=None) as bar:
            try:
                result = importers.read(path, args.format, mapping=args.map, labels=args.labels,
                                        source=args.source, progress=bar.update)
            except importers.FormatError as exc:
                raise CommandError(str(exc), 2) from None
        counts = result.counts()
        print(f"{path}: {len(result.records)} records (spam {counts['spam']}, ham {counts['ham']}), "
              f"{len(result.errors)} errors", file=stream)
        for reason, n in sorted(result.skipped.items()):
            print(f"  skipped {n}: {reason}", file=stream)
        if not result.records:
            empty.append(path)
        total.extend(result)
    _print_problems("error", total.errors, stream)
    _print_problems("warning", total.warnings, stream)
    if empty:
        raise CommandError(f"nothing usable in {', '.join(map(str, empty))}")
    return total


def _print_problems(kind: str, problems: list, stream: TextIO) -> None:
    for problem in problems[:ERRORS_SHOWN]:
        print(f"{kind}: {problem}", file=stream)
    if len(problems) > ERRORS_SHOWN:
        print(f"... and {len(problems) - ERRORS_SHOWN} more {kind}s", file=stream)


def _print_dedupe(report, stream: TextIO) -> None:
    print(f"duplicates: {report.removed} removed ({report.exact_copies} identical copies, "
          f"{len(report.groups)} repeated texts), {report.kept} distinct kept", file=stream)
    for group in report.conflicts[:ERRORS_SHOWN]:
        votes = ", ".join(f"{label} {n}" for label, n in sorted(group.labels.items()))
        outcome = f"kept as {group.kept}" if group.kept else "tie: every copy dropped"
        print(f"conflict: {group.text[:60]!r} labelled {votes}; {outcome} ({', '.join(group.where[:6])})",
              file=stream)
    if len(report.conflicts) > ERRORS_SHOWN:
        print(f"... and {len(report.conflicts) - ERRORS_SHOWN} more conflicts", file=stream)


def _label_counts(records: Iterable) -> dict[str, int]:
    counts = {"spam": 0, "ham": 0}
    for r in records:
        counts[r.label] += 1
    return counts


def _settings():
    from training.settings import Settings

    try:
        return Settings.from_env()
    except (ValueError, OSError) as exc:
        raise CommandError(f"bad settings: {exc}", 2) from None


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


# --- calls into the model core (kept together so its API shows in one place) ---------------------------------


def _load_model(path: str):
    from training import artifacts
    from training.settings import ROOT

    shipped = ROOT / "models" / "starter.joblib"
    if path == STARTER_NAME or Path(path).resolve() == shipped.resolve():
        # The shipped starter is trusted by the digest pinned in training.starter, not by this deployment's secret.
        from training import starter

        try:
            return starter.load_starter()
        except (artifacts.ArtifactError, OSError) as exc:
            raise CommandError(f"cannot load the starter model: {exc}", 2) from None
    if not Path(path).is_file():
        raise CommandError(f"cannot load model {path}: no such file", 2)
    try:
        return artifacts.load(path, _settings().secret_key)
    except artifacts.ArtifactError as exc:
        raise CommandError(f"cannot load model {path}: {exc}", 2) from None


def _train(comments, labels, sources, c: float | None = None, hash_bits: int | None = None):
    from training.features import FeatureConfig
    from training.model import train

    config = FeatureConfig(n_features=2**hash_bits) if hash_bits else None
    return train(comments, labels, sources=sources, config=config, C=c, progress=sys.stderr.isatty())


def _save(model, out: Path, secret: str):
    from training import artifacts

    return artifacts.save(model, out, secret)


def _scores(model, comments) -> list[float]:
    from tqdm import tqdm

    scores: list[float] = []
    step = 1000
    with tqdm(total=len(comments), unit="comment", desc="scoring", file=sys.stderr, leave=False,
              disable=None) as bar:
        for start in range(0, len(comments), step):
            scores.extend(float(p) for p in model.predict_proba(comments[start:start + step]))
            bar.update(min(step, len(comments) - start))
    return scores


def _metrics(y_true: list[int], scores: list[float]) -> dict[str, Any]:
    from training.evaluation import metrics

    figures = dict(metrics(y_true, scores))
    return {k: _json_safe(figures.get(k)) for k in METRIC_KEYS}


def _verdict(model, comment, settings, top: int) -> dict[str, Any]:
    """The verdict by this deployment's thresholds, and the contributions (signal -> weight) behind it."""
    verdict = model.score(comment, top=top)
    score = float(verdict.score)
    return {"verdict": verdict_name(score, settings), "score": score,
            "decision_value": float(verdict.decision_value),
            "reasons": [{"signal": r["signal"], "weight": float(r["weight"])} for r in verdict.reasons]}
