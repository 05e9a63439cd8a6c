"""The starter model shipped in models/, so a fresh Winnow scores sensibly before any site has labelled anything.

`python -m training.starter` (`make starter-model`) rebuilds it from the public comment corpora and pins the new
artifact's SHA-256 below. The repository's code is trusted, so the pin is what makes the shipped bytes trusted:
they are verified against it before unpickling. A deployment signs the starter with its own secret when the
starter enters its model registry.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import sys
from pathlib import Path
from typing import Any

import numpy as np

from training.artifacts import ArtifactError, check_versions, serialise, unpickle_trusted, write_atomic
from training.evaluation import metrics
from training.model import Model, train
from training.schema import Comment

ROOT = Path(__file__).resolve().parent.parent
STARTER_PATH = ROOT / "models" / "starter.joblib"
STARTER_META_PATH = STARTER_PATH.with_suffix(".json")
DATASETS = Path(os.environ.get("WINNOW_SHARED_DIR", ROOT.parent / "shared")) / "datasets"
# Decided by measurement (docs/BENCHMARKS.md, "Winnow, trained with SMS added"): SMS texts lower accuracy on
# unseen YouTube videos, and SpamAssassin is email with no open licence, so only YouTube comments are used.
CORPORA = ("youtube",)
SEED = 20261128

STARTER_SHA256 = "e361c8b24dffd74555cb401201950e01412d424e637d5d72f574a0df591741b4"


def load_starter(secret: str | bytes | None = None) -> Model:
    """The shipped starter model, verified against the pinned SHA-256 before unpickling.

    `secret` is accepted so callers can treat every model source alike; the starter is trusted by its pin, not
    by a signature (sign it with `artifacts.dumps(model, secret)` to store it in a registry)."""
    data, meta = starter_artifact()
    return unpickle_trusted(data, meta)


def starter_artifact() -> tuple[bytes, dict[str, Any]]:
    """The starter's verified bytes and metadata."""
    try:
        data = STARTER_PATH.read_bytes()
    except FileNotFoundError:
        raise ArtifactError(f"starter model {STARTER_PATH} is missing: run `make starter-model`") from None
    digest = hashlib.sha256(data).hexdigest()
    if not STARTER_SHA256 or digest != STARTER_SHA256:
        raise ArtifactError(
            f"starter model {STARTER_PATH} does not match the SHA-256 pinned in training/starter.py "
            f"(pinned {STARTER_SHA256 or 'nothing'}, file has {digest}): rebuild it with `make starter-model`"
        )
    try:
        meta = json.loads(STARTER_META_PATH.read_text())
    except (FileNotFoundError, ValueError) as exc:
        raise ArtifactError(f"starter metadata {STARTER_META_PATH} is missing or unreadable: {exc}") from None
    check_versions(meta)
    return data, meta


def read_corpus(name: str, root: Path | None = None) -> list[dict]:
    """Rows of a shared corpus's normalised JSONL file (`text`, `label`, optional `author`, `source`, ...)."""
    with open((root or DATASETS) / name / f"{name}.jsonl", encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def dedupe(rows: list[dict]) -> list[dict]:
    """First occurrence of each exact text (the shared corpora have no text with conflicting labels)."""
    seen: set[str] = set()
    return [r for r in rows if not (r["text"] in seen or seen.add(r["text"]))]


def corpus_comment(row: dict) -> Comment:
    """A corpus row as a Comment: text, author name and, for YouTube, the video as the page commented on.
    Never the Eminem `date` field, which leaks the label."""
    video = row.get("video_id")
    permalink = f"https://www.youtube.com/watch?v={video}" if video else ""
    return Comment(content=row["text"], author=row.get("author", ""), permalink=permalink)


def corpora(root: Path | None = None) -> tuple[list[Comment], list[str]]:
    """The starter's training data (deduplicated comments of CORPORA and their labels), for retraining a site's
    model on top of it. FileNotFoundError when the shared corpora are not on this machine."""
    rows = []
    for name in CORPORA:
        rows.extend(read_corpus(name, root))
    rows = dedupe(rows)
    return [corpus_comment(r) for r in rows], [r["label"] for r in rows]


def leave_one_video_out(rows: list[dict]) -> dict[str, Any]:
    """Mean metrics over the YouTube videos, each scored by a model trained on the others."""
    per_video = {}
    for video in sorted({r["source"] for r in rows}):
        test = dedupe([r for r in rows if r["source"] == video])
        texts = {r["text"] for r in test}
        train_rows = [r for r in rows if r["source"] != video and r["text"] not in texts]
        model = train([corpus_comment(r) for r in train_rows], [r["label"] for r in train_rows], seed=SEED,
                      sources=[r["source"] for r in train_rows])
        per_video[video] = metrics([r["label"] for r in test], model.predict_proba([corpus_comment(r) for r in test]))
    keys = ("accuracy", "precision", "recall", "f1", "mcc", "roc_auc", "recall_at_fpr_0_005")
    mean = {k: float(np.mean([m[k] for m in per_video.values()])) for k in keys}
    return {"mean": mean, "per_video": per_video}


def build(out: Path = STARTER_PATH, evaluate: bool = True) -> dict[str, Any]:
    rows = []
    for name in CORPORA:
        rows.extend(read_corpus(name))
    rows = dedupe(rows)
    print(f"training the starter model on {len(rows)} distinct texts from {', '.join(CORPORA)}", flush=True)
    model = train([corpus_comment(r) for r in rows], [r["label"] for r in rows], progress=True,
                  sources=[r.get("source", r["id"].rsplit("-", 1)[0]) for r in rows], seed=SEED)
    if evaluate:
        print("evaluating: YouTube leave-one-video-out", flush=True)
        model.meta["metrics"] = {"youtube_leave_one_video_out": leave_one_video_out(rows)}
    model.meta["corpora"] = list(CORPORA)
    model.meta["name"] = "starter"
    data, meta = serialise(model)
    write_atomic(out, data)
    write_atomic(out.with_suffix(".json"), (json.dumps(meta, indent=2, sort_keys=True) + "\n").encode())
    if out == STARTER_PATH:
        _pin(meta["sha256"])
    print(f"wrote {out} ({len(data) / 1e6:.2f} MB, sha256 {meta['sha256']})", flush=True)
    return meta


def _pin(digest: str) -> None:
    """Rewrite the STARTER_SHA256 line of this file so the new artifact is the trusted one."""
    global STARTER_SHA256
    source = Path(__file__)
    text = source.read_text()
    new, count = re.subn(r'^STARTER_SHA256 = "[0-9a-f]*"$', f'STARTER_SHA256 = "{digest}"', text, flags=re.M)
    if count != 1:
        raise RuntimeError("could not find the STARTER_SHA256 line to pin the new artifact")
    source.write_text(new)
    STARTER_SHA256 = digest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.starter", description=__doc__.splitlines()[0])
    parser.add_argument("--no-eval", action="store_true", help="skip the leave-one-video-out metrics")
    args = parser.parse_args(argv)
    if not (DATASETS / "youtube" / "youtube.jsonl").exists():
        print(f"shared datasets not found at {DATASETS}", file=sys.stderr)
        return 1
    meta = build(evaluate=not args.no_eval)
    lovo = meta.get("metrics", {}).get("youtube_leave_one_video_out", {}).get("mean")
    if lovo:
        print("leave-one-video-out mean: " + ", ".join(f"{k} {v:.3f}" for k, v in lovo.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
