"""The ceiling for `python -m bench http`: Flask with nothing but the fast scorer.

Served by the same gunicorn workers as Winnow, it answers `/ping` exactly as Winnow's bare route does and
`POST /check` with the starter model's verdict for the posted comment: the JSON body read, the comment parsed,
scored with its 8 reasons, answered as JSON. No key, no site policy, no stored record, no log line, no metrics, no
rate limiter. What it reaches against its own ping is the most any Flask route that scores a comment can reach on
this machine; Winnow's check is measured against it, and `POST /check?reasons=0` shows what the reasons cost.
"""
from __future__ import annotations

from flask import Flask, Response, jsonify, request

from training.schema import Comment
from training.starter import load_starter


def create_app() -> Flask:
    model = load_starter()
    app = Flask(__name__)

    @app.get("/ping")
    def ping() -> Response:
        return Response("pong", mimetype="text/plain")

    @app.post("/check")
    def check() -> Response:
        comment = Comment.from_dict(request.get_json())
        verdict = model.score(comment, top=0 if request.args.get("reasons") == "0" else 8)
        return jsonify({"verdict": verdict.decision, "score": verdict.score, "reasons": verdict.reasons})

    return app
