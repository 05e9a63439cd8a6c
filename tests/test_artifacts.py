"""Artifacts: round trip, and refusal (before unpickling) of anything this deployment did not write."""
from __future__ import annotations

import io
import json
import os
import pickle

import joblib
import pytest
import sklearn

from training import artifacts
from training.artifacts import ArtifactError
from training.model import train

SECRET = "deployment-secret-for-tests"


@pytest.fixture(scope="module")
def model():
    texts = ["win free money now http://bit.ly/x", "cheap pills online", "click here for prizes", "earn cash fast",
             "lovely song", "great video", "nice voice", "beautiful melody"] * 3
    return train(texts, (["spam"] * 4 + ["ham"] * 4) * 3, C=10.0)


def test_round_trip_through_files(model, tmp_path):
    path = tmp_path / "m.joblib"
    meta = artifacts.save(model, path, SECRET)
    on_disk = json.loads((tmp_path / "m.json").read_text())
    assert on_disk == meta
    for key in ("version", "created_at", "counts", "sources", "features", "metrics", "libraries", "sha256", "hmac"):
        assert key in on_disk
    assert on_disk["libraries"]["scikit-learn"] == sklearn.__version__
    loaded = artifacts.load(path, SECRET)
    assert loaded.score("free money").score == model.score("free money").score
    assert loaded.version == model.version
    assert "hmac" not in loaded.meta


def test_round_trip_in_memory(model):
    data, meta = artifacts.dumps(model, SECRET)
    assert artifacts.loads(data, meta, SECRET).predict_proba(["cash"])[0] == model.predict_proba(["cash"])[0]


def test_tampered_bytes_are_refused(model):
    data, meta = artifacts.dumps(model, SECRET)
    tampered = bytearray(data)
    tampered[len(tampered) // 2] ^= 0xFF
    with pytest.raises(ArtifactError, match="not written by this deployment"):
        artifacts.loads(bytes(tampered), meta, SECRET)


def test_foreign_or_missing_secret_or_signature_is_refused(model):
    data, meta = artifacts.dumps(model, SECRET)
    with pytest.raises(ArtifactError, match="not written by this deployment"):
        artifacts.loads(data, meta, "another-deployment")
    with pytest.raises(ArtifactError, match="no deployment secret"):
        artifacts.loads(data, meta, "")
    unsigned = {k: v for k, v in meta.items() if k != "hmac"}
    with pytest.raises(ArtifactError, match="carries no signature"):
        artifacts.loads(data, unsigned, SECRET)


def test_other_scikit_learn_version_is_refused_naming_both(model):
    data, meta = artifacts.dumps(model, SECRET)
    meta["libraries"] = dict(meta["libraries"], **{"scikit-learn": "0.24.2"})
    with pytest.raises(ArtifactError) as err:
        artifacts.loads(data, meta, SECRET)
    assert "0.24.2" in str(err.value) and sklearn.__version__ in str(err.value)


class _Boom:
    def __reduce__(self):
        return (os.system, ("touch " + os.environ["WINNOW_PWNED_PATH"],))


def test_malicious_pickle_is_never_executed(tmp_path, monkeypatch):
    marker = tmp_path / "pwned"
    monkeypatch.setenv("WINNOW_PWNED_PATH", str(marker))
    buf = io.BytesIO()
    joblib.dump(_Boom(), buf)
    evil = buf.getvalue()
    meta = {"hmac": "0" * 64, "libraries": {"scikit-learn": sklearn.__version__}}
    (tmp_path / "evil.joblib").write_bytes(evil)
    (tmp_path / "evil.json").write_text(json.dumps(meta))
    with pytest.raises(ArtifactError):
        artifacts.loads(evil, meta, SECRET)
    with pytest.raises(ArtifactError):
        artifacts.load(tmp_path / "evil.joblib", SECRET)
    assert not marker.exists()
    # The same bytes would run the payload if unpickled: the check above is what stopped it.
    pickle.loads(pickle.dumps(_Boom()))
    assert marker.exists()


def test_signed_object_that_is_not_a_model_is_refused():
    buf = io.BytesIO()
    joblib.dump({"not": "a model"}, buf)
    data = buf.getvalue()
    meta = {"hmac": artifacts.sign(data, SECRET), "libraries": {"scikit-learn": sklearn.__version__}}
    with pytest.raises(ArtifactError, match="not a Winnow model"):
        artifacts.loads(data, meta, SECRET)


def test_missing_files_are_clear_errors(tmp_path, model):
    with pytest.raises(ArtifactError, match="metadata .* is missing"):
        artifacts.load(tmp_path / "none.joblib", SECRET)
    artifacts.save(model, tmp_path / "m.joblib", SECRET)
    (tmp_path / "m.json").write_text("{not json")
    with pytest.raises(ArtifactError, match="not valid JSON"):
        artifacts.load(tmp_path / "m.joblib", SECRET)
