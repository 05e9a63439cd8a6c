"""Model artifacts: joblib bytes plus a metadata JSON, signed with the deployment secret.

Unpickling runs code, so nothing is unpickled before its HMAC-SHA256 (keyed by the deployment secret) has been
checked against the bytes; an artifact this deployment did not write, or one changed since, is refused. An
artifact from another scikit-learn major.minor is refused too, before unpickling, because pickled estimators do not
promise to work across those versions.
"""
from __future__ import annotations

import hashlib
import hmac
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import joblib
import sklearn

from training.model import Model, library_versions

FORMAT = "winnow-model/1"


class ArtifactError(Exception):
    """An artifact that must not be loaded: unsigned, signed by another deployment, altered or incompatible."""


def _secret_bytes(secret: str | bytes | None) -> bytes:
    if not secret:
        raise ArtifactError("no deployment secret given: artifacts are signed and checked with WINNOW_SECRET_KEY")
    return secret.encode("utf-8") if isinstance(secret, str) else bytes(secret)


def sign(data: bytes, secret: str | bytes) -> str:
    return hmac.new(_secret_bytes(secret), data, hashlib.sha256).hexdigest()


def _major_minor(version: str) -> tuple[str, ...]:
    return tuple(str(version).split(".")[:2])


def serialise(model: Model) -> tuple[bytes, dict[str, Any]]:
    """Unsigned artifact bytes and their metadata (the model's meta plus format, size and sha256)."""
    buf = io.BytesIO()
    joblib.dump(model, buf, compress=3)
    data = buf.getvalue()
    meta = {k: v for k, v in model.meta.items() if k not in ("hmac", "sha256", "size", "format")}
    meta["libraries"] = library_versions()
    meta.update({"format": FORMAT, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()})
    return data, meta


def dumps(model: Model, secret: str | bytes) -> tuple[bytes, dict[str, Any]]:
    """The artifact bytes and their metadata (the model's meta plus format, size, sha256 and hmac)."""
    data, meta = serialise(model)
    meta["hmac"] = sign(data, secret)
    return data, meta


def verify(data: bytes, meta: dict[str, Any], secret: str | bytes) -> None:
    """Raise ArtifactError unless `data` carries this deployment's signature and a compatible scikit-learn."""
    key = _secret_bytes(secret)
    claimed = meta.get("hmac") if isinstance(meta, dict) else None
    if not isinstance(claimed, str) or not claimed:
        raise ArtifactError("artifact was not written by this deployment: its metadata carries no signature (hmac)")
    expected = hmac.new(key, data, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, claimed):
        raise ArtifactError(
            "artifact was not written by this deployment (or was changed since): its HMAC does not match the "
            "deployment secret (WINNOW_SECRET_KEY, which every machine of a deployment must share)"
        )
    check_versions(meta)


def check_versions(meta: dict[str, Any]) -> None:
    built = (meta.get("libraries") or {}).get("scikit-learn")
    if not built:
        raise ArtifactError("artifact metadata does not say which scikit-learn wrote it")
    if _major_minor(built) != _major_minor(sklearn.__version__):
        raise ArtifactError(
            f"artifact was written with scikit-learn {built} but this is scikit-learn {sklearn.__version__}: "
            "retrain the model (major.minor versions must match)"
        )


def loads(data: bytes, meta: dict[str, Any], secret: str | bytes) -> Model:
    """Verify, then unpickle. The signature is checked before a single byte is unpickled."""
    verify(data, meta, secret)
    return unpickle_trusted(data, meta)


def unpickle_trusted(data: bytes, meta: dict[str, Any]) -> Model:
    """Unpickle bytes whose trust was established by the caller (signature or pinned hash already checked)."""
    model = joblib.load(io.BytesIO(data))
    if not isinstance(model, Model):
        raise ArtifactError(f"artifact holds a {type(model).__name__}, not a Winnow model")
    model.meta = {k: v for k, v in meta.items() if k not in ("hmac",)}
    return model


def meta_path(path: str | os.PathLike) -> Path:
    return Path(path).with_suffix(".json")


def write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; artifacts hold no secrets and ship in the repository
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def save(model: Model, path: str | os.PathLike, secret: str | bytes) -> dict[str, Any]:
    """Write PATH (joblib) and PATH with a .json suffix (metadata); returns the metadata."""
    path = Path(path)
    data, meta = dumps(model, secret)
    write_atomic(path, data)
    write_atomic(meta_path(path), (json.dumps(meta, indent=2, sort_keys=True) + "\n").encode())
    return meta


def read_meta(path: str | os.PathLike) -> dict[str, Any]:
    mpath = meta_path(path)
    try:
        meta = json.loads(Path(mpath).read_text())
    except FileNotFoundError:
        raise ArtifactError(f"artifact metadata {mpath} is missing") from None
    except ValueError as exc:
        raise ArtifactError(f"artifact metadata {mpath} is not valid JSON: {exc}") from None
    if not isinstance(meta, dict):
        raise ArtifactError(f"artifact metadata {mpath} is not a JSON object")
    return meta


def load(path: str | os.PathLike, secret: str | bytes) -> Model:
    """Read PATH and its .json metadata, verify the signature and versions, then unpickle."""
    path = Path(path)
    meta = read_meta(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ArtifactError(f"artifact {path} is missing") from None
    return loads(data, meta, secret)
