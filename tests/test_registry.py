"""The model registry in Redis and the serving holder: signing, atomic promotion, rollback, pruning, hot reload."""
from __future__ import annotations

import json
import threading
import time

import pytest
from rq import Queue
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from bench.loop_data import campaign
from tests.conftest import TEST_REDIS_URL
from training import artifacts
from training import rediskeys as keys
from training.model import train
from training.registry import Registry, RegistryError, ServingModel, UnknownVersion
from training.settings import Settings

LOOP_REDIS_URL = TEST_REDIS_URL.rsplit("/", 1)[0] + "/11"
SECRET = "registry-test-secret"


@pytest.fixture()
def r():
    client = redis.Redis.from_url(LOOP_REDIS_URL)
    try:
        client.ping()
    except redis.ConnectionError:
        pytest.fail(f"no Redis at {LOOP_REDIS_URL}")
    client.flushdb()
    yield client
    client.flushdb()
    client.close()


@pytest.fixture()
def settings(tmp_path):
    return Settings(redis_url=LOOP_REDIS_URL, secret_key=SECRET, data_dir=tmp_path, models_dir=tmp_path / "models",
                    keep_versions=3, model_poll_seconds=0.05)


@pytest.fixture(scope="module")
def models():
    """Two small models that disagree about the made-up campaign: one taught it, one taught the opposite."""
    rows = list(campaign(60, seed=1))
    comments = [c for c, _ in rows]
    taught = train(comments, [label for _, label in rows])
    backwards = train(comments, ["ham" if label == "spam" else "spam" for _, label in rows])
    return taught, backwards


@pytest.fixture()
def registry(r, settings):
    return Registry.from_settings(r, settings)


def spam_score(model) -> float:
    comment, _ = next(campaign(2, seed=99, start=1))
    return float(model.score(comment).score)


def test_publish_promote_and_read_back(registry, models):
    taught, backwards = models
    assert registry.current_version() is None and registry.list() == []
    v1 = registry.publish(taught, {"kind": "test", "metrics": {"mcc": 0.9}}, promoted_by="tester", reason="first",
                          promote=True)
    v2 = registry.publish(backwards, {"kind": "test"}, promoted_by="tester", reason="candidate only")
    assert registry.current_version() == v1
    listed = registry.list()
    assert [m["version"] for m in listed] == [v2, v1]
    assert [m["serving"] for m in listed] == [False, True]
    info = registry.get(v1)
    assert info["metrics"] == {"mcc": 0.9} and info["promoted_by"] == "tester" and info["promote_reason"] == "first"
    assert info["size"] > 0 and len(info["sha256"]) == 64
    assert spam_score(registry.load(v1)) == pytest.approx(spam_score(taught))
    with pytest.raises(UnknownVersion):
        registry.get("v999")
    with pytest.raises(UnknownVersion):
        registry.load("v999")


def test_promote_and_rollback_keep_a_history(registry, models):
    taught, backwards = models
    v1 = registry.publish(taught, promoted_by="a", reason="one", promote=True)
    v2 = registry.publish(backwards, promoted_by="a", reason="two", promote=True)
    v3 = registry.publish(taught, promoted_by="a", reason="three")
    registry.promote(v3, by="admin:alice", reason="by hand")
    assert registry.current_version() == v3
    assert registry.rollback(by="admin:alice")["version"] == v2
    assert registry.rollback(by="admin:alice")["version"] == v1  # steps back again, does not toggle
    with pytest.raises(RegistryError):
        registry.rollback(by="admin:alice")
    kinds = [(e["kind"], e["version"], e["previous"]) for e in registry.history()]
    assert kinds[:3] == [("rollback", v1, v2), ("rollback", v2, v3), ("promote", v3, v2)]
    assert registry.get(v3)["promoted_by"] == "admin:alice"
    with pytest.raises(UnknownVersion):
        registry.promote("v77", by="x")
    assert registry.current_version() == v1


def test_rollback_survives_a_repeated_promotion_a_long_history_and_a_race(registry, models, r, monkeypatch):
    taught, backwards = models
    v1 = registry.publish(taught, promoted_by="a", reason="one", promote=True)
    v2 = registry.publish(backwards, promoted_by="a", reason="two", promote=True)
    history = len(registry.history())
    assert registry.promote(v2, by="admin:alice", reason="clicked twice")["serving"] is True  # changes nothing
    assert len(registry.history()) == history
    for i in range(600):  # gate refusals push the promotion out of the kept history
        registry.record_rejection({"version": ""}, by="retrain", reason=f"worse {i}")
    assert all(e["kind"] == "reject" for e in registry.history())
    assert registry.rollback(by="admin:alice")["version"] == v1
    registry.promote(v2, by="admin:alice", reason="again")
    # A retrain promotes v3 between the rollback's read of the serving version and its promotion: refused.
    v3 = registry.publish(taught, promoted_by="retrain", reason="better")
    real_target = registry._rollback_target

    def racing_target(current):
        target = real_target(current)
        registry.promote(v3, by="retrain", reason="better")
        return target
    monkeypatch.setattr(registry, "_rollback_target", racing_target)
    with pytest.raises(RegistryError, match="changed from v2 to v3"):
        registry.rollback(by="admin:alice")
    assert registry.current_version() == v3 and registry.history()[0]["kind"] == "promote"


def test_prune_keeps_the_newest_and_never_the_serving_one(registry, models, settings):
    taught, _ = models
    first = registry.publish(taught, promote=True)
    for _ in range(5):
        registry.publish(taught)
    versions = [m["version"] for m in registry.list()]
    assert len(versions) == settings.keep_versions + 1 and first in versions
    assert registry.current_version() == first and registry.load(first) is not None


def test_foreign_or_tampered_artifacts_are_refused(registry, models, r):
    taught, _ = models
    foreign = Registry(r, "another-deployment")
    v = foreign.publish(taught, promote=True)
    with pytest.raises(artifacts.ArtifactError):
        registry.load(v)
    mine = registry.publish(taught)
    key = keys.MODEL_VERSION.format(version=mine)
    blob = bytearray(r.hget(key, "artifact"))
    blob[len(blob) // 2] ^= 0xFF
    r.hset(key, "artifact", bytes(blob))
    with pytest.raises(artifacts.ArtifactError):
        registry.load(mine)


def test_cache_on_disk_is_verified_on_every_load(registry, models, settings, r):
    taught, backwards = models
    v = registry.publish(taught, promote=True)
    registry.load(v)
    cached = sorted((settings.models_dir / "cache").glob(f"{v}-*.joblib"))
    assert len(cached) == 1
    # A cache file swapped for another model's bytes no longer matches Redis's digest: fetched again.
    other, _ = artifacts.dumps(backwards, SECRET)
    cached[0].write_bytes(other)
    assert spam_score(registry.load(v)) == pytest.approx(spam_score(taught))
    # Same bytes, forged metadata: the HMAC check refuses it, and the registry falls back to Redis.
    meta_path = cached[0].with_suffix(".json")
    meta = json.loads(meta_path.read_text())
    meta_path.write_text(json.dumps({**meta, **{k: "0" * 64 for k in meta if "sig" in k or "hmac" in k}}))
    assert spam_score(registry.load(v)) == pytest.approx(spam_score(taught))


def test_bootstrap_happens_once_under_concurrency(r, settings, models):
    taught, _ = models
    calls = []

    def starter():
        calls.append(1)
        time.sleep(0.2)
        return taught

    results = []
    threads = [threading.Thread(target=lambda: results.append(
        Registry.from_settings(redis.Redis.from_url(LOOP_REDIS_URL), settings).bootstrap(starter)))
        for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and len(set(results)) == 1
    registry = Registry.from_settings(r, settings)
    assert registry.get(results[0])["kind"] == "starter"
    assert registry.history()[0]["by"] == "bootstrap"


def test_serving_model_swaps_within_two_seconds_and_refuses_foreign_artifacts(r, settings, models):
    taught, backwards = models
    serving = ServingModel(r, settings, load_starter=lambda: taught).start()
    try:
        registry = Registry.from_settings(r, settings)
        first = serving.version
        assert first == registry.current_version()
        assert spam_score(serving.model) == pytest.approx(spam_score(taught))

        v2 = registry.publish(backwards, promote=True)
        deadline = time.monotonic() + 2.0
        while serving.version != v2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert serving.version == v2
        version, model = serving.snapshot()
        assert version == v2 and spam_score(model) == pytest.approx(spam_score(backwards))

        # A version written by another deployment's secret is refused; the current model keeps serving.
        foreign = Registry(r, "not-our-secret").publish(taught, promote=True)
        time.sleep(0.5)
        assert registry.current_version() == foreign
        assert serving.version == v2 and spam_score(serving.model) == pytest.approx(spam_score(backwards))
        assert serving.refused_current == foreign  # what /readyz reports: this node serves what others do not

        registry.promote(first, by="test")
        deadline = time.monotonic() + 2.0
        while serving.version != first and time.monotonic() < deadline:
            time.sleep(0.01)
        assert serving.version == first and serving.refused_current is None
    finally:
        serving.stop()


def test_serving_model_without_redis_serves_the_starter(settings, models, tmp_path):
    taught, _ = models
    dead = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2, retry=Retry(NoBackoff(), 0))
    serving = ServingModel(dead, settings, load_starter=lambda: taught).start()
    try:
        assert serving.version == "starter" and serving.model is taught
        assert serving.check_now() is False
    finally:
        serving.stop()


def test_fixed_holder_needs_nothing(models):
    taught, _ = models
    holder = ServingModel.fixed(taught, "v-test")
    assert holder.snapshot() == ("v-test", taught) and holder.check_now() is False
    holder.stop()


# ---- the same over HTTP ----------------------------------------------------------------------------------------------
@pytest.fixture()
def http(r, settings, models):
    from service.app import create_app
    from training.apikeys import KeyStore

    app = create_app(settings, redis_client=r, serving=ServingModel.fixed(models[0]))
    store = KeyStore(r)
    tokens = {role: store.create("" if role != "site" else "https://a.example.org", role, role)[0]
              for role in ("site", "moderator", "admin")}
    for role in ("moderator", "admin"):
        tokens[f"site_{role}"] = store.create("https://a.example.org", role, f"a.example.org {role}")[0]

    def call(method, path, role=None, body=None):
        headers = {"Authorization": f"Bearer {tokens[role]}"} if role else {}
        return app.test_client().open(path, method=method, json=body, headers=headers)

    return call


def test_models_api_reads_for_moderators_and_changes_for_admins(http, registry, models):
    taught, backwards = models
    v1 = registry.publish(taught, {"kind": "test"}, promoted_by="t", reason="one", promote=True)
    v2 = registry.publish(backwards, {"kind": "test"}, promoted_by="t", reason="two")

    listing = http("GET", "/api/v1/models", "moderator")
    assert listing.status_code == 200
    body = listing.get_json()
    assert body["current"] == v1 and [v["version"] for v in body["versions"]] == [v2, v1]
    assert http("GET", f"/api/v1/models/{v2}", "moderator").get_json()["serving"] is False
    assert http("GET", "/api/v1/models/v999", "moderator").status_code == 404
    assert http("GET", "/api/v1/models/../etc", "moderator").status_code == 404
    assert http("GET", "/api/v1/models", "site").status_code == 403
    assert http("GET", "/api/v1/models").status_code == 401

    assert http("POST", f"/api/v1/models/{v2}/promote", "moderator").status_code == 403
    promoted = http("POST", f"/api/v1/models/{v2}/promote", "admin", {"reason": "better on our data"})
    assert promoted.status_code == 200 and registry.current_version() == v2
    assert registry.get(v2)["promoted_by"] == "admin:admin"
    bad = http("POST", f"/api/v1/models/{v2}/promote", "admin", {"reason": 5})
    assert bad.status_code == 400 and bad.get_json()["error"]["field"] == "reason"
    unknown = http("POST", f"/api/v1/models/{v2}/promote", "admin", {"why": "x"})
    assert unknown.status_code == 400 and unknown.get_json()["error"]["field"] == "why"
    assert http("POST", "/api/v1/models/v404/promote", "admin").status_code == 404

    back = http("POST", "/api/v1/models/rollback", "admin", {})
    assert back.status_code == 200 and back.get_json()["version"] == v1 and registry.current_version() == v1
    assert http("POST", "/api/v1/models/rollback", "admin").status_code == 409


def test_retrain_and_job_endpoints(http, r):
    queued = http("POST", "/api/v1/models/retrain", "admin", {"reason": "try it"})
    assert queued.status_code == 202
    job_id = queued.get_json()["job_id"]
    assert queued.headers["Location"].endswith(f"/api/v1/jobs/{job_id}")
    again = http("POST", "/api/v1/models/retrain", "admin")
    assert again.get_json()["job_id"] == job_id  # already queued: the same job
    status = http("GET", f"/api/v1/jobs/{job_id}", "moderator").get_json()
    assert status["status"] == "queued" and status["reason"] == "try it" and status["progress"] == 0.0
    assert http("GET", "/api/v1/jobs/nope", "moderator").status_code == 404
    assert http("GET", f"/api/v1/jobs/{'x' * 100}", "moderator").status_code == 404
    internal = Queue("winnow", connection=r).enqueue("training.jobs.recover_retrain")  # the clock's own kind
    assert http("GET", f"/api/v1/jobs/{internal.id}", "moderator").status_code == 404
    assert http("POST", "/api/v1/models/rollback", "moderator").status_code == 403
    bad = http("POST", "/api/v1/models/retrain", "admin", {"full": "yes"})
    assert bad.status_code == 400 and bad.get_json()["error"]["field"] == "full"


def test_cli_lists_promotes_and_rolls_back(registry, models, settings, monkeypatch, capsys):
    from training.cli import main

    for name, value in {"WINNOW_REDIS_URL": LOOP_REDIS_URL, "WINNOW_SECRET_KEY": SECRET,
                        "WINNOW_MODELS_DIR": str(settings.models_dir), "WINNOW_DATA_DIR": str(settings.data_dir)}.items():
        monkeypatch.setenv(name, value)
    v1 = registry.publish(models[0], {"kind": "test"}, promoted_by="t", reason="one", promote=True)
    v2 = registry.publish(models[1], {"kind": "test"}, promoted_by="t", reason="two")
    one_class = {"metrics": {"challenger": {"mcc": 0.0, "roc_auc": None}, "champion": {"mcc": 0.0, "roc_auc": None}}}
    v3 = registry.publish(models[1], one_class, promoted_by="t", reason="the judged labels are all spam")
    judged = {"metrics": {"challenger": {"mcc": 0.8125, "roc_auc": 0.97}}}
    v4 = registry.publish(models[1], judged, promoted_by="t", reason="better")
    assert main(["models", "list"]) == 0
    out = capsys.readouterr().out
    assert f"* {v1}" in out and f"  {v2}" in out
    lines = {line.split()[0]: line for line in out.splitlines()[1:]}
    assert " n/a " in lines[v3] and " 0.0000 " not in lines[v3]  # an MCC judged on one class tells nothing
    assert " 0.8125 " in lines[v4]
    assert main(["models", "promote", v2, "--reason", "try it"]) == 0
    assert registry.current_version() == v2 and registry.get(v2)["promoted_by"].startswith("cli")
    assert main(["models", "rollback"]) == 0 and registry.current_version() == v1
    capsys.readouterr()
    assert main(["models", "promote", v1]) == 0  # already serving: said so, and the history does not grow
    assert capsys.readouterr().out.strip() == f"{v1} already serves; nothing changed"
    assert [e["kind"] for e in registry.history()][:1] == ["rollback"]
    assert main(["models", "show", "v999"]) == 4
    assert "no model version" in capsys.readouterr().err
    assert main(["retrain"]) == 0
    job_id = capsys.readouterr().out.strip()
    assert job_id.startswith("retrain-")
    # No worker is up to run the queued retrain: --now takes it over and runs it here.
    assert main(["retrain", "--now"]) == 0
    assert capsys.readouterr().out.startswith("skip: need at least 2 spam and 2 ham labels")


# ---- promotion races and refusals --------------------------------------------------------------------------------
def test_a_run_judged_against_a_replaced_champion_is_kept_as_a_candidate(registry, models):
    taught, backwards = models
    v1 = registry.publish(taught, promoted_by="a", reason="one", promote=True)
    v2 = registry.publish(backwards, promoted_by="a", reason="two", promote=True)
    assert registry.rollback(by="admin:alice")["version"] == v1
    # A retrain judged its challenger against v2 and finishes after the rollback.
    v3 = registry.publish(taught, {"kind": "retrain"}, promoted_by="retrain", reason="beats v2", promote=True,
                          expected_current=v2)
    assert registry.current_version() == v1
    info = registry.get(v3)
    assert info["status"] == "candidate" and info["serving"] is False and "promoted_at" not in info
    assert info["reason"] == f"the serving version changed during the run (was {v2}, now {v1})"
    event = registry.history()[0]
    assert (event["kind"], event["version"], event["previous"], event["reason"]) == ("reject", v3, v1, info["reason"])
    v4 = registry.publish(taught, promoted_by="retrain", reason="beats v1", promote=True, expected_current=v1)
    assert registry.current_version() == v4 and registry.get(v4)["status"] == "promoted"


def test_promote_refuses_a_version_no_node_could_load(registry, models, r, http):
    taught, backwards = models
    v1 = registry.publish(taught, promoted_by="a", reason="one", promote=True)
    foreign = Registry(r, "another-deployment").publish(backwards)
    with pytest.raises(RegistryError, match="not written by this deployment"):
        registry.promote(foreign, by="admin:alice")
    old_library = registry.publish(backwards)
    key = keys.MODEL_VERSION.format(version=old_library)
    meta = json.loads(r.hget(key, "artifact_meta"))
    meta["libraries"]["scikit-learn"] = "0.1.0"
    r.hset(key, "artifact_meta", json.dumps(meta))
    with pytest.raises(RegistryError, match="scikit-learn 0.1.0"):
        registry.promote(old_library, by="admin:alice")
    refused = http("POST", f"/api/v1/models/{foreign}/promote", "admin", {"reason": "try"})
    assert refused.status_code == 409 and refused.get_json()["error"]["code"] == "conflict"
    assert registry.current_version() == v1 and registry.get(foreign)["status"] == "candidate"
    assert [e["kind"] for e in registry.history()] == ["promote"]


def test_metadata_damaged_in_redis_is_refused_like_a_bad_signature(registry, models, r, http, settings):
    taught, backwards = models
    v1 = registry.publish(taught, promoted_by="a", reason="one", promote=True)
    damaged = registry.publish(backwards)
    key = keys.MODEL_VERSION.format(version=damaged)
    r.hset(key, "artifact_meta", r.hget(key, "artifact_meta")[:40])  # truncated
    with pytest.raises(artifacts.ArtifactError, match="not valid JSON"):
        registry.load(damaged)
    refused = http("POST", f"/api/v1/models/{damaged}/promote", "admin", {"reason": "try"})
    assert refused.status_code == 409 and "not valid JSON" in refused.get_json()["error"]["message"]
    assert registry.current_version() == v1
    serving = ServingModel(r, settings, load_starter=lambda: taught).start()
    try:
        r.set(keys.MODEL_CURRENT, damaged)  # as if promoted by hand: the nodes refuse it and keep serving v1
        deadline = time.monotonic() + 2.0
        while serving.refused_current != damaged and time.monotonic() < deadline:
            time.sleep(0.01)
        assert serving.refused_current == damaged and serving.version == v1
    finally:
        serving.stop()


def test_promote_judges_the_bytes_in_redis_not_this_nodes_cache(registry, models, r):
    """A node that cached a version before its artifact was damaged in Redis still refuses it: every other node
    would load the damaged bytes."""
    taught, backwards = models
    v1 = registry.publish(taught, promoted_by="a", reason="one", promote=True)
    v2 = registry.publish(backwards)
    registry.load(v2)  # now in this node's cache
    key = keys.MODEL_VERSION.format(version=v2)
    blob = r.hget(key, "artifact")
    r.hset(key, "artifact", blob[:-100] + bytes(100))  # damaged; the sha256 field is left as it was
    with pytest.raises(RegistryError, match=f"model {v2} cannot be served"):
        registry.promote(v2, by="admin:alice")
    assert registry.current_version() == v1


def test_keys_bound_to_one_site_cannot_change_the_model_every_site_shares(http, registry, models, r):
    taught, backwards = models
    v1 = registry.publish(taught, promoted_by="a", reason="one", promote=True)
    v2 = registry.publish(backwards, promoted_by="a", reason="two", promote=True)
    for path in (f"/api/v1/models/{v1}/promote", "/api/v1/models/rollback", "/api/v1/models/retrain"):
        resp = http("POST", path, "site_admin", {"reason": "mine"})
        assert resp.status_code == 403 and resp.get_json()["error"]["code"] == "forbidden_site", path
    retrain = http("POST", "/api/v1/models/retrain", "site_moderator", {})
    assert retrain.status_code == 403 and retrain.get_json()["error"]["code"] == "forbidden_site"
    assert registry.current_version() == v2 and not r.keys("rq:job:*")
    assert http("GET", "/api/v1/models", "site_admin").status_code == 200  # reading stays allowed
    assert http("POST", "/api/v1/models/retrain", "moderator", {}).status_code == 202


def test_prune_never_deletes_a_version_promoted_while_it_ran(registry, models, r):
    taught, _ = models
    roomy = Registry(r, SECRET, keep_versions=10)
    versions = [roomy.publish(taught) for _ in range(4)]
    newest = roomy.publish(taught, promote=True)
    oldest = versions[0]
    other_client = redis.Redis.from_url(LOOP_REDIS_URL)
    other = Registry(other_client, SECRET)

    def promote_during_the_read(response, **options):
        # Fires when prune has read the pointer: another admin promotes the oldest version at that moment.
        if response == newest.encode() and not fired:
            fired.append(other.promote(oldest, by="admin:bob", reason="back to the old one"))
        return response

    fired: list = []
    r.set_response_callback("GET", promote_during_the_read)
    try:
        doomed = registry.prune()
    finally:
        r.response_callbacks.pop("GET", None)
        other_client.close()
    assert fired and registry.current_version() == oldest
    assert oldest not in doomed and doomed == [versions[1]]
    assert registry.load(oldest) is not None


def test_cache_paths_never_leave_the_cache_directory(registry, models, settings, r, tmp_path):
    taught, _ = models
    v = registry.publish(taught, promote=True)
    key = keys.MODEL_VERSION.format(version=v)
    climbing = "../../escaped"
    r.hset(keys.MODEL_VERSION.format(version=climbing), mapping=r.hgetall(key))
    assert spam_score(registry.load(climbing)) == pytest.approx(spam_score(taught))
    r.hset(key, "sha256", "/../../escaped" + "0" * 50)
    assert spam_score(registry.load(v)) == pytest.approx(spam_score(taught))
    assert sorted(p.name for p in tmp_path.rglob("*escaped*")) == []
    cache = settings.models_dir / "cache"
    assert not cache.exists() or list(cache.iterdir()) == []
