"""The `winnow` command: a train -> evaluate -> score round trip, clear errors and exit codes on bad input, and the
subcommand registry other packages plug into."""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest

from tests.conftest import ROOT, require_datasets
from training import cli

DATA = Path(__file__).parent / "data"
SECRET = "cli-test-secret"
# Small hash space and a fixed C keep a fit to about a second; the defaults are exercised by the model's own tests.
FAST = ["--c", "10", "--hash-bits", "14"]
TRAIN_FILES = ["wordpress.xml", "disqus.xml", "simple.csv", "sms.txt"]
METRIC_KEYS = {"accuracy", "precision", "recall", "f1", "mcc", "roc_auc", "n", "recall_at_fpr_0_005"}


@pytest.fixture(autouse=True)
def deployment(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("WINNOW_SECRET_KEY", SECRET)
    monkeypatch.setenv("WINNOW_DATA_DIR", str(tmp_path_factory.getbasetemp() / "var"))


def data_args(*names):
    return [a for name in names for a in ("--data", str(DATA / name))]


def run(argv, capsys, stdin: str | None = None, monkeypatch=None):
    if stdin is not None:
        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    code = cli.main(argv)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One small model for the module, trained through the command itself."""
    out = tmp_path_factory.mktemp("model") / "small.joblib"
    env = {"WINNOW_SECRET_KEY": SECRET}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        code = cli.main(["train", *data_args(*TRAIN_FILES), "--out", str(out), *FAST])
    finally:
        for k, v in saved.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
    assert code == 0
    return out


# --- train ---------------------------------------------------------------------------------------------------


def test_train_writes_artifact_and_metadata(trained):
    meta = json.loads(trained.with_suffix(".json").read_text())
    # 16 usable rows in the fixtures, one duplicate text ("He said "yes") removed before training.
    assert meta["counts"] == {"spam": 8, "ham": 7}
    assert meta["sources"] == {"wordpress": {"spam": 2, "ham": 2}, "disqus": {"spam": 2, "ham": 1},
                               "simple": {"spam": 2, "ham": 2}, "sms": {"spam": 2, "ham": 2}}
    assert meta["features"]["n_features"] == 2**14
    assert meta["classifier"]["C"] == 10.0
    assert meta["sha256"] and meta["hmac"] and meta["version"]


def test_train_reports_problems_and_summary(tmp_path, capsys):
    out = tmp_path / "m.joblib"
    code, stdout, err = run(["train", *data_args(*TRAIN_FILES), "--out", str(out), *FAST,
                             "--eval", str(DATA / "semicolon.csv")], capsys)
    assert code == 0
    assert f"wrote {out}" in stdout
    assert "wordpress: spam 2, ham 2" in stdout
    assert "held-out: accuracy" in stdout
    assert f"error: {DATA / 'sms.txt'}:8: no tab between label and text" in err
    assert f"warning: {DATA / 'simple.csv'}:5: author_email: is not an email address (field left out)" in err
    assert "skipped 1: wordpress comment_approved=trash (in the trash)" in err
    assert "duplicates: 1 removed (1 identical copies, 1 repeated texts), 15 distinct kept" in err
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["metrics"]["n"] == 2 and set(METRIC_KEYS) <= set(meta["metrics"])


def test_train_strict_refuses_row_errors(tmp_path, capsys):
    code, _, err = run(["train", *data_args("sms.txt", "simple.csv"), "--out", str(tmp_path / "m.joblib"),
                        "--strict", *FAST], capsys)
    assert code == 1
    assert "--strict" in err and not (tmp_path / "m.joblib").exists()


def test_train_file_with_nothing_usable_exits_nonzero(tmp_path, capsys):
    code, _, err = run(["train", *data_args("simple.csv", "empty.jsonl"), "--out", str(tmp_path / "m.joblib"),
                        *FAST], capsys)
    assert code == 1
    assert f"{DATA / 'empty.jsonl'}: file is empty" in err
    assert "nothing usable in" in err and "Traceback" not in err
    assert not (tmp_path / "m.joblib").exists()


def test_train_needs_both_labels(tmp_path, capsys):
    path = tmp_path / "spam-only.jsonl"
    path.write_text('{"text": "buy now", "label": "spam"}\n{"text": "cheap pills", "label": "spam"}\n')
    code, _, err = run(["train", "--data", str(path), "--out", str(tmp_path / "m.joblib"), *FAST], capsys)
    assert code == 1 and "both spam and ham" in err


def test_train_with_mapping_and_labels(tmp_path, capsys):
    out = tmp_path / "m.joblib"
    code, _, err = run(["train", *data_args("mapped.csv", "simple.csv"), "--map", "content=body,label=verdict",
                        "--labels", "spam=yes,ham=no", "--out", str(out), *FAST], capsys)
    # The mapping applies to every file: simple.csv has no `body` column, so it is reported, not guessed at.
    assert code == 1
    assert "no column 'body' (for content)" in err
    code, _, err = run(["train", *data_args("mapped.csv"), "--map", "content=body,label=verdict,author=who",
                        "--labels", "spam=yes,ham=no", "--out", str(out), *FAST], capsys)
    assert code == 1 and "at least 2 spam and 2 ham" in err and "Traceback" not in err
    more = tmp_path / "more.csv"
    more.write_text("body,verdict\nWIN cash now,yes\nfree followers,yes\nnice one,no\n")
    code, _, err = run(["train", *data_args("mapped.csv"), "--data", str(more), "--map", "content=body,label=verdict",
                        "--labels", "spam=yes,ham=no", "--out", str(out), *FAST], capsys)
    assert code == 0, err
    assert json.loads(out.with_suffix(".json").read_text())["counts"] == {"spam": 3, "ham": 3}


@pytest.mark.parametrize("argv,message", [
    (["--map", "colour=x"], "cannot map 'colour'"),
    (["--labels", "spam=1"], "needs at least one value for spam and one for ham"),
    (["--format", "excel"], "invalid choice"),
    (["--c", "-1"], "must be a positive number"),
    (["--hash-bits", "40"], "invalid choice"),
])
def test_train_bad_options_are_usage_errors(tmp_path, capsys, argv, message):
    with pytest.raises(SystemExit) as info:
        cli.main(["train", "--data", str(DATA / "simple.csv"), "--out", str(tmp_path / "m.joblib"), *argv])
    assert info.value.code == 2
    assert message in capsys.readouterr().err


def test_train_mapping_on_a_format_without_columns(tmp_path, capsys):
    code, _, err = run(["train", "--data", str(DATA / "sms.txt"), "--map", "content=x", "--out",
                        str(tmp_path / "m.joblib")], capsys)
    assert code == 2 and "mapping applies to csv and jsonl" in err


def test_train_refuses_json_out(tmp_path, capsys):
    code, _, err = run(["train", "--data", str(DATA / "simple.csv"), "--out", str(tmp_path / "m.json")], capsys)
    assert code == 2 and ".json suffix" in err


# --- evaluate ------------------------------------------------------------------------------------------------


def test_evaluate_json_has_exactly_the_metric_keys(trained, capsys):
    code, out, err = run(["evaluate", "--model", str(trained), "--data", str(DATA / "mixed.jsonl"), "--json"],
                         capsys)
    assert code == 0, err
    figures = json.loads(out)
    assert set(figures) == METRIC_KEYS
    assert figures["n"] == 4
    assert all(0.0 <= figures[k] <= 1.0 for k in METRIC_KEYS - {"n", "mcc"})
    assert out.count("\n") == 1  # one JSON object; progress and problems go to stderr
    assert "mixed.jsonl:4: not valid JSON" in err


def test_evaluate_table(trained, capsys):
    code, out, _ = run(["evaluate", "--model", str(trained), *data_args("semicolon.csv", "mixed.jsonl")], capsys)
    assert code == 0
    for name in ("accuracy", "precision (spam)", "recall (spam)", "F1 (spam)", "MCC", "ROC AUC",
                 "spam recall at 0.5% FPR"):
        assert name in out
    assert [line.split()[-1] for line in out.splitlines() if line.startswith("n ")] == ["6"]


def test_evaluate_dedupe(trained, capsys):
    code, out, err = run(["evaluate", "--model", str(trained), "--data", str(DATA / "sms.txt"), "--dedupe",
                          "--json"], capsys)
    assert code == 0
    assert json.loads(out)["n"] == 4 and "duplicates: 1 removed" in err


def test_evaluate_single_class_gives_null_not_nan(trained, capsys, tmp_path):
    path = tmp_path / "ham.jsonl"
    path.write_text('{"text": "thanks for the post", "label": "ham"}\n')
    code, out, _ = run(["evaluate", "--model", str(trained), "--data", str(path), "--json"], capsys)
    assert code == 0
    figures = json.loads(out)  # strict JSON: NaN would not parse in most clients
    assert figures["roc_auc"] is None and figures["n"] == 1


# --- score ---------------------------------------------------------------------------------------------------


def test_score_writes_one_verdict_per_line(trained, capsys, monkeypatch):
    lines = [
        {"text": "Great post! buy cheap pills http://pills.example/buy", "id": "a"},
        {"content": "Which variety did you grow?", "author": "Marta", "author_email": "marta@example.org"},
    ]
    stdin = "".join(json.dumps(x) + "\n" for x in lines)
    code, out, err = run(["score", "--model", str(trained), "--reasons", "3"], capsys, stdin, monkeypatch)
    assert code == 0, err
    verdicts = [json.loads(line) for line in out.splitlines()]
    assert [v["line"] for v in verdicts] == [1, 2]
    assert verdicts[0]["id"] == "a" and "id" not in verdicts[1]
    for v in verdicts:
        assert v["verdict"] in ("ham", "unsure", "spam")
        assert 0.0 <= v["score"] <= 1.0
        expected = "spam" if v["score"] >= 0.9 else "unsure" if v["score"] >= 0.5 else "ham"
        assert v["verdict"] == expected
        # The explanation: at most 3 signals, then bias and the rest, adding up to the decision value.
        assert len(v["reasons"]) <= 5 and v["reasons"][-2]["signal"] == "(bias)"
        assert sum(r["weight"] for r in v["reasons"]) == pytest.approx(v["decision_value"], abs=1e-9)
    assert verdicts[0]["score"] > verdicts[1]["score"]


def test_score_thresholds_come_from_settings(trained, capsys, monkeypatch):
    monkeypatch.setenv("WINNOW_UNSURE_THRESHOLD", "0.0")
    monkeypatch.setenv("WINNOW_SPAM_THRESHOLD", "0.0")
    code, out, _ = run(["score", "--model", str(trained)], capsys, '{"content": "hello"}\n', monkeypatch)
    assert code == 0 and json.loads(out)["verdict"] == "spam"


def test_score_bad_lines_name_field_and_line_and_go_on(trained, capsys, monkeypatch):
    stdin = "\n".join([
        '{"content": "fine"}',
        "not json",
        '{"content": "x", "bogus": 1}',
        '{"author": "no content"}',
        '{"content": "x", "author_email": "nope"}',
        '["a list"]',
        '{"content": "x", "text": "both"}',
        "",
        '{"text": "also fine"}',
    ]) + "\n"
    code, out, err = run(["score", "--model", str(trained)], capsys, stdin, monkeypatch)
    assert code == 1
    rows = [json.loads(line) for line in out.splitlines()]
    assert [r["line"] for r in rows] == [1, 2, 3, 4, 5, 6, 7, 9]
    errors = {r["line"]: r["error"] for r in rows if "error" in r}
    assert errors[2]["field"] == "body" and "not valid JSON" in errors[2]["message"]
    assert errors[3] == {"field": "bogus", "message": "unknown field"}
    assert errors[4] == {"field": "content", "message": "is required"}
    assert errors[5]["field"] == "author_email"
    assert errors[6]["field"] == "body"
    assert errors[7] == {"field": "text", "message": "unknown field"}
    assert "verdict" in rows[0] and "verdict" in rows[-1]
    assert "6 line(s) could not be scored" in err


def test_score_reads_bytes_line_by_line_whatever_the_locale(trained, capsys, monkeypatch):
    """Under a UTF-8 locale stdin is strict: one line that is not UTF-8 was a traceback that lost every line. A
    BOM, lines of a labelled corpus file, a member given twice and NaN are handled as the other commands do."""
    raw = (b'\xef\xbb\xbf{"content": "ok"}\n'
           b'{"content": "caf\xe9"}\n'
           b'{"id": "youtube-psy-0001", "text": "check out my channel", "label": "spam", "date": "2013-11-07", '
           b'"source": "youtube:Psy", "video_id": "9bZkp7q19f0"}\n'
           b'{"content": "a", "content": "b"}\n'
           b'{"content": "a", "time_to_submit": NaN}\n'
           b'{"content": "a", "date": "2013-11-07"}\n' + b'[' * 5000 + b']' * 5000 + b'\n')
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(raw), encoding="utf-8", errors="strict"))
    code = cli.main(["score", "--model", str(trained)])
    out, err = capsys.readouterr()
    assert code == 1
    rows = {row["line"]: row for row in map(json.loads, out.splitlines())}
    assert sorted(rows) == [1, 2, 3, 4, 5, 6, 7]
    assert "verdict" in rows[1]
    assert rows[2]["error"] == {"field": "body", "message": "not valid UTF-8 (byte 17 of the line)"}
    assert rows[3]["id"] == "youtube-psy-0001" and rows[3]["label"] == "spam" and "verdict" in rows[3]
    assert rows[4]["error"] == {"field": "content", "message": "given twice in one object"}
    assert rows[5]["error"] == {"field": "body", "message": "NaN is not a number in JSON"}
    assert rows[6]["error"] == {"field": "date", "message": "unknown field"}  # an API-shaped line stays strict
    assert rows[7]["error"] == {"field": "body", "message": "nests too deeply"}
    assert "5 line(s) could not be scored" in err


# --- loading models ------------------------------------------------------------------------------------------


def test_missing_model_exits_2(capsys, monkeypatch, tmp_path):
    code, _, err = run(["score", "--model", str(tmp_path / "nope.joblib")], capsys, "", monkeypatch)
    assert code == 2 and "no such file" in err and "Traceback" not in err


def test_model_from_another_deployment_exits_2(trained, capsys, monkeypatch):
    monkeypatch.setenv("WINNOW_SECRET_KEY", "another-deployment")
    code, _, err = run(["evaluate", "--model", str(trained), "--data", str(DATA / "simple.csv")], capsys)
    assert code == 2
    assert "not written by this deployment" in err and "Traceback" not in err


def test_tampered_model_exits_2(trained, capsys, tmp_path):
    copy = tmp_path / "tampered.joblib"
    data = bytearray(trained.read_bytes())
    data[len(data) // 2] ^= 0xFF
    copy.write_bytes(bytes(data))
    copy.with_suffix(".json").write_text(trained.with_suffix(".json").read_text())
    code, _, err = run(["evaluate", "--model", str(copy), "--data", str(DATA / "simple.csv")], capsys)
    assert code == 2 and "HMAC does not match" in err


def test_model_without_metadata_exits_2(trained, capsys, tmp_path):
    copy = tmp_path / "bare.joblib"
    copy.write_bytes(trained.read_bytes())
    code, _, err = run(["evaluate", "--model", str(copy), "--data", str(DATA / "simple.csv")], capsys)
    assert code == 2 and "metadata" in err


def test_starter_path_goes_through_load_starter(trained, capsys, monkeypatch):
    from training import artifacts

    calls = []

    def load_starter():
        calls.append(1)
        return artifacts.load(trained, SECRET)

    from training import starter

    monkeypatch.setattr(starter, "load_starter", load_starter)
    monkeypatch.setenv("WINNOW_SECRET_KEY", "not-the-one-that-signed-it")
    for model in ("starter", str(ROOT / "models" / "starter.joblib")):
        code, out, err = run(["score", "--model", model], capsys, '{"content": "hi"}\n', monkeypatch)
        assert code == 0, err
        assert json.loads(out)["verdict"] in ("ham", "unsure", "spam")
    assert len(calls) == 2


def test_shipped_starter_scores(capsys, monkeypatch):
    if not (ROOT / "models" / "starter.joblib").exists():
        pytest.skip("models/starter.joblib is not built yet (make starter-model)")
    code, out, err = run(["score", "--model", "starter", "--reasons", "2"], capsys,
                         '{"content": "Check out my channel and subscribe http://bit.ly/abc"}\n'
                         '{"content": "This song reminds me of summer 2012"}\n', monkeypatch)
    assert code == 0, err
    spammy, fine = (json.loads(line) for line in out.splitlines())
    assert spammy["score"] > fine["score"]


# --- the registry of subcommands -----------------------------------------------------------------------------


def test_registered_module_adds_a_command(capsys, monkeypatch):
    module = types.ModuleType("winnow_test_plugin")

    def add_parser(subparsers):
        p = subparsers.add_parser("hello", help="say hello")
        p.add_argument("--name", default="world")
        p.set_defaults(handler=lambda args: print(f"hello {args.name}") or 3)

    module.add_parser = add_parser
    monkeypatch.setitem(sys.modules, "winnow_test_plugin", module)
    monkeypatch.setattr(cli, "COMMANDS", [*cli.COMMANDS, ("hello", "winnow_test_plugin")])
    assert cli.main(["hello", "--name", "Ada"]) == 3
    assert capsys.readouterr().out == "hello Ada\n"


def test_only_the_chosen_commands_module_is_imported(monkeypatch, capsys):
    monkeypatch.setattr(cli, "COMMANDS", [*cli.COMMANDS, ("broken", "winnow_no_such_module")])
    # Other commands still parse while a registered module cannot be imported...
    with pytest.raises(SystemExit) as info:
        cli.main(["score", "--help"])
    assert info.value.code == 0
    assert "--model" in capsys.readouterr().out
    # ...the broken one says why, without a traceback...
    assert cli.main(["broken"]) == 1
    assert "cannot load" in capsys.readouterr().err
    # ...and help lists it as unavailable rather than failing.
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    assert "unavailable" in capsys.readouterr().out


def test_command_error_and_no_command(capsys, monkeypatch):
    module = types.ModuleType("winnow_test_failing")

    def add_parser(subparsers):
        def fail(args):
            raise cli.CommandError("the reason", 4)
        subparsers.add_parser("fail").set_defaults(handler=fail)

    module.add_parser = add_parser
    monkeypatch.setitem(sys.modules, "winnow_test_failing", module)
    monkeypatch.setattr(cli, "COMMANDS", [("fail", "winnow_test_failing")])
    assert cli.main(["fail"]) == 4
    assert capsys.readouterr().err == "winnow fail: the reason\n"
    assert cli.main([]) == 2


def test_arguments_that_are_no_utf8_are_usage_errors_not_tracebacks(capsys, tmp_path):
    for argv in (["keys", "create", "--site", "https://a.example.com/", "--name", "\udcff"],
                 ["keys", "revoke", "\udcff"], ["import", str(tmp_path / "bad\udcff.jsonl")]):
        assert cli.main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("winnow: the argument b'") and "\\xff" in err and err.endswith(
            "' is not valid UTF-8 text (rename a file whose name is not)\n"), err


# --- through the real entry points ---------------------------------------------------------------------------


def winnow(*args, stdin: str | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "training", *args], input=stdin, capture_output=True, text=True,
                          cwd=ROOT, timeout=300, env={**os.environ, "WINNOW_SECRET_KEY": SECRET, **(env or {})})


def test_round_trip_through_python_m_training(tmp_path):
    out = tmp_path / "rt.joblib"
    trained = winnow("train", *data_args("wordpress.xml", "disqus.xml", "simple.csv"), "--out", str(out), *FAST)
    assert trained.returncode == 0, trained.stderr
    assert f"wrote {out}" in trained.stdout
    evaluated = winnow("evaluate", "--model", str(out), "--data", str(DATA / "sms.txt"), "--json")
    assert evaluated.returncode == 0, evaluated.stderr
    assert set(json.loads(evaluated.stdout)) == METRIC_KEYS
    scored = winnow("score", "--model", str(out), stdin='{"text": "buy cheap pills"}\n{"content": 1}\n')
    assert scored.returncode == 1
    first, second = (json.loads(line) for line in scored.stdout.splitlines())
    assert first["verdict"] in ("ham", "unsure", "spam") and first["reasons"]
    assert second == {"line": 2, "error": {"field": "content", "message": "must be a string"}}
    refused = winnow("score", "--model", str(out), stdin="", env={"WINNOW_SECRET_KEY": "other"})
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert refused.stderr.startswith("winnow score: cannot load model")


def test_console_script_is_installed():
    script = Path(sys.executable).parent / "winnow"
    if not script.exists():
        pytest.skip("the winnow console script is installed by `pip install -e .`")
    result = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "train" in result.stdout and "score" in result.stdout


def test_real_corpus_round_trip(tmp_path, capsys):
    datasets = require_datasets()
    raw = datasets / "youtube" / "raw"
    out = tmp_path / "yt.joblib"
    code, _, err = run(["train", "--data", str(raw / "Youtube01-Psy.csv"), "--data", str(raw / "Youtube02-KatyPerry.csv"),
                        "--out", str(out), "--c", "10", "--hash-bits", "16"], capsys)
    assert code == 0, err
    assert "duplicates: 5 removed" in err  # 3 within the files, 2 across them
    meta = json.loads(out.with_suffix(".json").read_text())
    assert set(meta["sources"]) == {"youtube:Psy", "youtube:KatyPerry"}
    code, out_json, err = run(["evaluate", "--model", str(out), "--data", str(raw / "Youtube03-LMFAO.csv"),
                               "--json"], capsys)
    assert code == 0, err
    figures = json.loads(out_json)
    assert figures["n"] == 438
    # A loose floor: this is a check that the pipeline learns from real data, not the accuracy benchmark.
    assert figures["accuracy"] > 0.85 and figures["roc_auc"] > 0.9
