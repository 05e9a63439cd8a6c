"""`winnow keys` and `winnow import` against the real Redis (SERVICE database, flushed)."""
from __future__ import annotations

import json

import pytest

from tests.service_support import service_redis, service_redis_url
from training.apikeys import KeyStore
from training.cli import main
from training.labels import LabelStore


@pytest.fixture()
def r(monkeypatch, tmp_path):
    client = service_redis()
    client.flushdb()
    monkeypatch.setenv("WINNOW_REDIS_URL", service_redis_url())
    monkeypatch.setenv("WINNOW_DATA_DIR", str(tmp_path))
    yield client
    client.flushdb()
    client.close()


def test_keys_create_prints_the_key_last_and_list_revoke_work(r, capsys):
    assert main(["keys", "create", "--site", "Blog.Example.com/", "--name", "blog"]) == 0
    key = capsys.readouterr().out.strip().splitlines()[-1]
    record = KeyStore(r).authenticate(key)
    assert len(key) == 12 and record.site == "https://blog.example.com" and record.role == "site"
    assert main(["keys", "create", "--role", "moderator", "--name", "alice"]) == 0
    token = capsys.readouterr().out.strip().splitlines()[-1]
    assert token.startswith("wm_") and KeyStore(r).authenticate(token).site == ""
    assert main(["keys", "list"]) == 0
    listing = capsys.readouterr().out
    assert record.id in listing and "alice" in listing and key not in listing and token not in listing
    assert main(["keys", "revoke", record.id]) == 0
    assert KeyStore(r).authenticate(key) is None
    assert main(["keys", "revoke", "nosuch"]) == 1
    assert main(["keys", "create", "--role", "site"]) == 2  # a site key needs its site
    assert "a site key needs its site: --site URL" in capsys.readouterr().err


def test_import_loads_files_into_the_label_store_and_reimport_relabels(r, tmp_path, capsys):
    data = tmp_path / "labels.jsonl"
    data.write_text("\n".join(json.dumps(x) for x in [
        {"text": "cheap pills http://x.example.com", "label": "spam"},
        {"text": "lovely write-up, thanks", "label": "ham"},
        {"text": "lovely write-up, thanks", "label": "ham"},
        {"text": "no label here"},
    ]) + "\n")
    assert main(["import", str(data), "--site", "https://blog.example.com"]) == 0
    out = capsys.readouterr()
    assert "2 labels stored (2 new" in out.out and "1 removed" in out.err and ":4:" in out.err
    store = LabelStore(r)
    examples = list(store.iter_examples("https://blog.example.com"))
    assert sorted(label for _, label, *_ in examples) == ["ham", "spam"]
    assert all(site == "https://blog.example.com" for *_, site, _ in examples)
    flipped = tmp_path / "flipped.jsonl"
    flipped.write_text(json.dumps({"text": "cheap pills http://x.example.com", "label": "ham"}) + "\n")
    assert main(["import", str(flipped), "--site", "blog.example.com", "--by", "bulk"]) == 0
    assert "1 relabelled" in capsys.readouterr().out
    assert store.count() == 2
    relabelled = [r for r in store.export() if r.label == "ham" and "pills" in r.comment.content][0]
    assert [(a["from"], a["to"], a["by"]) for a in store.audit(relabelled.id)][-1] == ("spam", "ham", "bulk")
    empty = tmp_path / "empty.jsonl"
    empty.write_text('{"nothing": 1}\n')
    assert main(["import", str(empty), "--site", "blog.example.com"]) != 0


def test_without_redis_url_or_a_running_make_run_the_cli_names_the_problem(monkeypatch, tmp_path, capsys):
    # Not whatever Redis listens on the default port: it may be anyone's.
    monkeypatch.delenv("WINNOW_REDIS_URL", raising=False)
    monkeypatch.delenv("REDIS_URL", raising=False)
    monkeypatch.setenv("WINNOW_DATA_DIR", str(tmp_path))
    assert main(["keys", "create", "--role", "admin"]) == 3
    err = capsys.readouterr().err
    assert "REDIS_URL is unset" in err and "make run" in err
    assert main(["keys", "list"]) == 3


def test_a_label_export_imports_into_another_site_whole(r, tmp_path, capsys):
    """GET /api/v1/labels/export nests each comment under `comment`: the file moves labels between deployments
    or sites (and trains offline) as it is."""
    from training import labels as label_store
    from training.schema import Comment

    store = LabelStore(r)
    comment = Comment(content="Great guide, the firewall part saved me", author="Ana", author_email="ana@example.org",
                      created_at="2026-05-01T10:00:00+00:00", post_title="Hardening a VPS")
    store.put_many([label_store.for_comment("https://a.example.com", comment, "ham", by="mod"),
                 label_store.for_comment("https://a.example.com", Comment(content="buy followers cheap"), "spam",
                                         by="mod")])
    export = tmp_path / "labels.jsonl"  # written as the export route writes it
    export.write_text("".join(json.dumps(record.to_dict(), ensure_ascii=False) + "\n"
                              for record in store.export(site="https://a.example.com")))
    assert main(["import", str(export), "--site", "https://b.example.com"]) == 0
    assert "2 labels stored (2 new" in capsys.readouterr().out
    moved = {rec.comment.content: rec for rec in store.export(site="https://b.example.com")}
    assert moved["buy followers cheap"].label == "spam"
    ham = moved["Great guide, the firewall part saved me"]
    assert ham.label == "ham" and ham.site == "https://b.example.com"
    assert ham.comment.replace(site="") == comment  # every field, the comment's own created_at included


def test_a_model_from_winnow_train_is_published_and_served_and_a_foreign_one_is_refused(r, tmp_path, capsys,
                                                                                          monkeypatch):
    from tests.test_cli import DATA, FAST, TRAIN_FILES
    from training.registry import Registry
    from training.settings import Settings

    monkeypatch.setenv("WINNOW_SECRET_KEY", "p" * 64)
    out = tmp_path / "mine.joblib"
    assert main(["train", *[a for n in TRAIN_FILES for a in ("--data", str(DATA / n))], "--out", str(out),
                 *FAST]) == 0
    registry = Registry.from_settings(r, Settings.from_env())
    capsys.readouterr()
    assert main(["models", "publish", str(out)]) == 0
    candidate = capsys.readouterr().out.split()[0]
    info = registry.get(candidate)
    assert info["status"] == "candidate" and registry.current_version() != candidate
    assert info["counts"]["labels"] == info["counts"]["spam"] + info["counts"]["ham"] > 0
    assert main(["models", "publish", str(out), "--promote", "--reason", "ours"]) == 0
    serving = capsys.readouterr().out.split()[0]
    assert registry.current_version() == serving and registry.get(serving)["promote_reason"] == "ours"
    # The very model, loadable by every web node.
    assert registry.load(serving).meta["counts"] == {"spam": info["counts"]["spam"], "ham": info["counts"]["ham"]}

    monkeypatch.setenv("WINNOW_SECRET_KEY", "q" * 64)  # another deployment's artifact
    assert main(["models", "publish", str(out), "--promote"]) == 2
    assert "cannot load model" in capsys.readouterr().err
    assert registry.current_version() == serving
