"""Settings come from the environment once; `winnow` commands find the Redis that `make run` embedded."""
import json

import pytest

from training.settings import EMBEDDED_REDIS_STATE, Settings


def test_redis_url_from_env_wins(tmp_path):
    state = tmp_path / EMBEDDED_REDIS_STATE
    state.parent.mkdir(parents=True)
    state.write_text(json.dumps({"pid": 1, "port": 6555}))
    env = {"WINNOW_DATA_DIR": str(tmp_path), "REDIS_URL": "redis://10.0.0.5:6379/2", "WINNOW_SECRET_KEY": "k"}
    assert Settings.from_env(env).redis_url == "redis://10.0.0.5:6379/2"


def test_embedded_redis_is_found_without_redis_url(tmp_path):
    env = {"WINNOW_DATA_DIR": str(tmp_path), "WINNOW_SECRET_KEY": "k"}
    assert Settings.from_env(env).redis_url == "redis://127.0.0.1:6379/0"
    state = tmp_path / EMBEDDED_REDIS_STATE
    state.parent.mkdir(parents=True)
    state.write_text(json.dumps({"pid": 1, "port": 6555}))
    assert Settings.from_env(env).redis_url == "redis://127.0.0.1:6555/0"


def test_typed_values_and_secret_made_once(tmp_path):
    env = {"WINNOW_DATA_DIR": str(tmp_path), "WINNOW_SPAM_THRESHOLD": "0.8", "WINNOW_RETENTION_DAYS": "7",
           "WINNOW_USE_STARTER_CORPORA": "yes"}
    first = Settings.from_env(env)
    assert (first.spam_threshold, first.retention_days, first.use_starter_corpora) == (0.8, 7, True)
    assert len(first.secret_key) == 64
    assert (tmp_path / "secret_key").stat().st_mode & 0o077 == 0
    assert Settings.from_env(env).secret_key == first.secret_key


@pytest.mark.parametrize("name,value,said", [
    ("WINNOW_SPAM_THRESHOLD", "abc", "WINNOW_SPAM_THRESHOLD='abc' is not a number"),
    ("WINNOW_RETENTION_DAYS", "7.5", "WINNOW_RETENTION_DAYS='7.5' is not a whole number"),
    ("WINNOW_USE_STARTER_CORPORA", "maybe", "WINNOW_USE_STARTER_CORPORA='maybe' is not true or false"),
    ("WINNOW_UNSURE_THRESHOLD", "0.95", "WINNOW_UNSURE_THRESHOLD <= WINNOW_SPAM_THRESHOLD"),
    ("WINNOW_DISCARD_THRESHOLD", "1.5", "each between 0 and 1"),
    ("WINNOW_RETRAIN_CRON", "0 3 * *", "WINNOW_RETRAIN_CRON='0 3 * *' is not a cron expression"),
    ("WINNOW_RETENTION_DAYS", "0", "WINNOW_RETENTION_DAYS=0 must be at least 1"),
    ("WINNOW_MODEL_POLL_SECONDS", "nan", "WINNOW_MODEL_POLL_SECONDS=nan must be a number"),
])
def test_a_setting_no_process_could_run_with_is_refused_naming_its_variable(tmp_path, name, value, said):
    # An unsure threshold above the spam one would answer nothing "unsure"; a cron line rq cannot read would
    # quietly drop the nightly refit.
    with pytest.raises(ValueError) as raised:
        Settings.from_env({"WINNOW_DATA_DIR": str(tmp_path), "WINNOW_SECRET_KEY": "k", name: value})
    assert said in str(raised.value)


def test_the_cli_says_which_setting_is_wrong(tmp_path, monkeypatch, capsys):
    from training.cli import main

    monkeypatch.setenv("WINNOW_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("WINNOW_SPAM_THRESHOLD", "abc")
    assert main(["keys", "list"]) == 2
    assert "bad settings: WINNOW_SPAM_THRESHOLD='abc' is not a number" in capsys.readouterr().err
