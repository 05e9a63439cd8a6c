"""Settings come from the environment once; `winnow` commands find the Redis that `make run` embedded."""
import json

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
