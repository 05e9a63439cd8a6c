"""The shipped starter model: trusted only by its pinned SHA-256, and it scores obvious cases sensibly."""
from __future__ import annotations

import pytest

from training import starter
from training.artifacts import ArtifactError


def test_starter_loads_and_scores_obvious_cases():
    model = starter.load_starter()
    assert model.meta["name"] == "starter"
    assert model.meta["corpora"] == list(starter.CORPORA)
    spam = model.score("Check out my channel and subscribe!!! Free iPhone giveaway at http://bit.ly/win-now")
    ham = model.score("This song brings back so many memories, the chorus is beautiful")
    assert spam.score > 0.5 and spam.decision == "spam"
    assert ham.score < 0.5 and ham.decision == "ham"


def test_starter_metadata_records_provenance_and_metrics():
    _, meta = starter.starter_artifact()
    assert meta["counts"]["spam"] > 0 and meta["counts"]["ham"] > 0
    assert all(source.startswith("youtube:") for source in meta["sources"])
    lovo = meta["metrics"]["youtube_leave_one_video_out"]["mean"]
    assert lovo["accuracy"] > 0.9


def test_a_changed_starter_is_refused_before_unpickling(tmp_path, monkeypatch):
    forged = tmp_path / "starter.joblib"
    forged.write_bytes(starter.STARTER_PATH.read_bytes() + b"\0")
    monkeypatch.setattr(starter, "STARTER_PATH", forged)
    with pytest.raises(ArtifactError, match="does not match the SHA-256 pinned"):
        starter.load_starter()


def test_an_unpinned_starter_is_refused(monkeypatch):
    monkeypatch.setattr(starter, "STARTER_SHA256", "")
    with pytest.raises(ArtifactError, match="pinned nothing"):
        starter.load_starter()


def test_a_missing_starter_says_how_to_build_it(tmp_path, monkeypatch):
    monkeypatch.setattr(starter, "STARTER_PATH", tmp_path / "absent.joblib")
    with pytest.raises(ArtifactError, match="make starter-model"):
        starter.load_starter()


def test_corpora_are_the_starter_training_data():
    from tests.conftest import require_datasets

    require_datasets()
    comments, labels = starter.corpora()
    _, meta = starter.starter_artifact()
    assert len(comments) == len(labels) == meta["counts"]["spam"] + meta["counts"]["ham"]
    assert labels.count("spam") == meta["counts"]["spam"]
    assert comments[0].permalink.startswith("https://www.youtube.com/watch?v=")


def test_corpora_say_when_the_shared_data_is_absent(tmp_path):
    with pytest.raises(FileNotFoundError):
        starter.corpora(tmp_path)
