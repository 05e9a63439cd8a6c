"""Checking and labelling as domain functions, shared by the JSON API, the Akismet face and the console.

A check reads nothing from Redis: the model is in memory, the site's policy and the key are cached, and the record
is written behind. Labels are the opposite: stored synchronously, or refused with StoreUnavailable.
"""
from __future__ import annotations

import dataclasses
import hashlib
import hmac
import logging
import random
import time
from typing import Any, Callable, Mapping, Sequence

import redis

from service import metrics
from service.context import services
from service.http import BatchInvalid
from training import labels as label_store
from training.apikeys import KeyRecord
from training.checks import CheckRecord
from training.labels import LabelRecord
from training.schema import Comment, ValidationError, parse_label, roles_of

log = logging.getLogger("winnow.checking")


class StoreUnavailable(Exception):
    """Redis did not take a write that must not be lost; the faces answer 503 (nothing was stored)."""


class NoModel(StoreUnavailable):
    """This process has no model to score with yet (its first load has not finished)."""


class NotFound(Exception):
    """No such check or label in the caller's scope (another site's ids are reported the same way)."""


class NotTrainable(Exception):
    """A label for an is_test check: test checks never become training data."""


@dataclasses.dataclass(frozen=True, slots=True)
class CheckResult:
    id: str
    verdict: str
    score: float
    discard: bool
    reasons: list[dict[str, Any]]
    model_version: str
    shadow: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "verdict": self.verdict, "score": self.score, "discard": self.discard,
                "reasons": self.reasons, "model_version": self.model_version, "shadow": self.shadow}


# A check is written to Redis behind its answer (training.checks.WriteBehind, every 250 ms), and the next request
# about it — a label by id, an Akismet submit with its guid — may reach another web process. Looking up an id this
# deployment issued less than this long ago waits for it to land instead of answering 404.
SETTLE_SECONDS = 2.0
_ID_TAGS: dict[str, Any] = {}  # deployment secret -> the keyed hash that tags its check ids


def new_id(secret: str) -> str:
    """32 hex digits: the creation time in milliseconds (11), 52 random bits from the per-process generator (13;
    re-seeded after fork: an id names a check, it guards nothing, site scope does, and os.urandom would cost a
    system call on every check), then a 32-bit tag keyed by the deployment secret (8), so a lookup waits only for
    ids this deployment made: a made-up recent id cannot hold a web thread for seconds."""
    stamp = f"{int(time.time() * 1000):011x}{random.getrandbits(52):013x}"
    return stamp + _id_tag(stamp, secret)


def _id_tag(stamp: str, secret: str) -> str:
    keyed = _ID_TAGS.get(secret)
    if keyed is None:
        subkey = hmac.new(secret.encode(), b"winnow check ids", hashlib.sha256).digest()
        keyed = _ID_TAGS[secret] = hmac.new(subkey, digestmod=hashlib.sha256)
    tag = keyed.copy()
    tag.update(stamp.encode("ascii", "replace"))
    return tag.hexdigest()[:8]


def _may_be_settling(check_id: str) -> bool:
    """Whether an id unknown to Redis may still be on its way there: issued by this deployment (its tag holds)
    within the last SETTLE_SECONDS (a second of clock difference between machines allowed)."""
    if len(check_id) != 32 or not check_id.isascii():
        return False
    try:
        made_ms = int(check_id[:11], 16)
    except ValueError:
        return False
    return -1.0 < time.time() - made_ms / 1000.0 < SETTLE_SECONDS and hmac.compare_digest(
        _id_tag(check_id[:24], services().settings.secret_key), check_id[24:])


def check(comment: Comment, *, site: str, principal: KeyRecord | None, is_test: bool = False, source: str = "api",
          ids: Mapping[str, str] | None = None, told: Callable[[str], str] | None = None) -> CheckResult:
    """Score a comment for `site` under the site's policy and record it (written behind, never blocking).

    `told` maps the answer to what a face really tells the platform (the Akismet face answers only spam or ham),
    so the stored `answered` is what the platform was told."""
    svc = services()
    version, model = svc.serving.snapshot()
    if model is None:
        raise NoModel("no model is loaded yet")
    try:
        policy = svc.sites.policy(site)
    except redis.RedisError as exc:
        raise StoreUnavailable(f"the site's settings are not loaded yet and Redis cannot be reached: {exc}") from exc
    if comment.site != site:
        comment = comment.replace(site=site)
    verdict = model.score(comment)
    score = float(verdict.score)
    real = policy.verdict(score)
    discard = real == "spam" and score >= policy.discard_threshold
    reasons = _reasons(verdict)
    trusted_role = next((r for r in roles_of(comment.user_role) if r in policy.trusted_roles), None) \
        if comment.user_role else None
    trusted = trusted_role is not None
    answered = real
    if comment.honeypot and not trusted:
        # The site's hidden field, which no person sees, was filled in: a bot, whatever the text says. The model
        # learns the signal from labels only, and none of its training data has it; its own verdict is what is
        # stored, so a moderator's label on the check says whether the model was wrong.
        answered = "spam"
        reasons = [{"signal": "honeypot filled", "weight": 0.0}] + reasons
    if trusted:
        answered, discard = "ham", False
        reasons = [{"signal": f"trusted role: {trusted_role}", "weight": 0.0}] + reasons
    if policy.shadow:
        answered, discard = "ham", False
    if told is not None:
        answered = told(answered)
        discard = discard and answered == "spam"
    record = CheckRecord(
        id=new_id(svc.settings.secret_key), site=site, comment=comment, verdict=real, answered=answered, score=score,
        discard=discard, model_version=str(version or ""), created_at=time.time(), reasons=tuple(reasons),
        shadow=policy.shadow,
        trusted=trusted, is_test=is_test, source=source, key_id=principal.id if principal else "",
        refs=tuple((str(k), str(v)) for k, v in (ids or {}).items()),
    )
    svc.writer.submit(record)
    metrics.observe_verdict(answered, source)
    return CheckResult(id=record.id, verdict=answered, score=round(score, 6), discard=discard, reasons=reasons,
                       model_version=record.model_version, shadow=policy.shadow)


def _reasons(verdict: Any) -> list[dict[str, Any]]:
    """The model's top contributions as [{"signal", "weight"}], whatever shape the model reports them in.

    Weights are passed on as the model computed them (not rounded), so the reasons add up to its decision value."""
    items = getattr(verdict, "reasons", None) or ()
    if all(type(item) is dict for item in items):  # what the model gives: one pass, no ABC checks
        return [{"signal": str(item.get("signal")), "weight": float(item.get("weight"))} for item in items]
    out = []
    for item in items:
        if isinstance(item, Mapping):
            signal, weight = item.get("signal"), item.get("weight")
        elif isinstance(item, (tuple, list)) and len(item) >= 2:
            signal, weight = item[0], item[1]
        else:
            signal, weight = getattr(item, "signal", item), getattr(item, "weight", 0.0)
        out.append({"signal": str(signal), "weight": float(weight)})
    return out


def get_check(check_id: str, *, site_scope: str | None) -> CheckRecord:
    """A stored (or still buffered) check in the caller's scope, or NotFound."""
    svc = services()
    record = svc.writer.pending(check_id)
    while record is None:
        try:
            record = svc.checks.get(check_id)
        except redis.RedisError as exc:
            raise StoreUnavailable(str(exc)) from exc
        if record is not None or not _may_be_settling(check_id):
            break
        time.sleep(0.05)  # made a moment ago: another process is still writing it
    if record is None or (site_scope is not None and record.site != site_scope):
        raise NotFound(check_id)
    return record


def newest_check_of(comment: Comment, *, site: str) -> CheckRecord | None:
    """The newest kept check of the same comment (site, author, e-mail, address, post and content), or None.
    Checks this process answered a moment ago are written first: a report right after its check finds it."""
    svc = services()
    if svc.writer.size():
        svc.writer.flush(timeout=2.0)
    try:
        return svc.checks.newest_check_of(site, comment)
    except redis.RedisError as exc:
        raise StoreUnavailable(str(exc)) from exc


def standing_labels_of(check: CheckRecord) -> list[str]:
    """Ids of the standing labels of the check's comment (given by any of its checks), newest first."""
    try:
        return services().checks.standing_labels_of(check)
    except redis.RedisError as exc:
        raise StoreUnavailable(str(exc)) from exc


def label_check(check_id: str, label: str, *, moderator: KeyRecord | str, site_scope: str | None,
                source: str = "api", expect: str = "", expect_at: float | None = None) -> LabelRecord:
    """Label a stored check by id (relabel allowed, audited); returns the stored label once Redis has it.

    Checks expire after the retention period and their labels do not: a check that is gone but was labelled can
    still be relabelled by its id. With `expect` (labels.UNLABELLED, or the label the check must have now) the label
    is stored only if that still holds (with `expect_at`, only while that label still carries the labelled_at the
    caller saw), else LabelConflict: two moderators on one comment never silently overwrite each other."""
    label = parse_label(label)
    try:
        record = get_check(check_id, site_scope=site_scope)
    except NotFound:
        return relabel(check_id, label, moderator=moderator, site_scope=site_scope, source=source, of_check=True,
                       expect=expect, expect_at=expect_at)
    if record.is_test:
        raise NotTrainable(check_id)
    svc = services()
    if svc.writer.pending(check_id) is not None:
        # The check itself must be in Redis first, or a later flush would put it back in the queue.
        if not svc.writer.flush(timeout=2.0):
            raise StoreUnavailable("the check is not stored yet")
    stored = _store([label_store.for_check(record, label, by=_who(moderator), source=source)], expect=expect,
                    expect_at=expect_at)[0]
    if record.queued:
        try:
            svc.checks.settle(record)
        except redis.RedisError as exc:  # the label is stored; a queue read still shows the newer check
            log.warning("check %s is labelled, but its comment's newer check could not leave the queue: %s",
                        check_id, exc)
    return stored


def label_new(comment: Comment, label: str, *, moderator: KeyRecord | str, site: str,
              source: str = "api") -> LabelRecord:
    """Label a comment that was never checked (full content given)."""
    return label_new_many([(site, comment, label)], moderator=moderator, source=source)[0]


def label_new_many(items: Sequence[tuple[str, Comment, str]], *, moderator: KeyRecord | str,
                   source: str = "api") -> list[LabelRecord]:
    """Store (site, comment, label) items all or nothing, in one Redis transaction.

    The same comment twice gets the same label id, so the later item would silently replace the earlier one:
    such a batch is refused (BatchInvalid naming each repeat as items[i].content) before anything is stored.
    """
    by = _who(moderator)
    records = [label_store.for_comment(site, comment, parse_label(label), by=by, source=source)
               for site, comment, label in items]
    first: dict[str, int] = {}
    repeats = []
    for i, record in enumerate(records):
        j = first.setdefault(record.id, i)
        if j != i:
            repeats.append(ValidationError(f"items[{i}].content", f"repeats items[{j}]"))
    if repeats:
        raise BatchInvalid(repeats)
    return _store(records)


def relabel(label_id: str, label: str, *, moderator: KeyRecord | str, site_scope: str | None,
            source: str = "console", of_check: bool = False, expect: str = "",
            expect_at: float | None = None) -> LabelRecord:
    """Change a stored label by its id, whether or not its check is still kept (checks expire, labels do not).
    With `of_check`, only the label of a check (feedback on a check by its id may change that, and not an example
    a moderator added with its content). `expect` as for label_check."""
    label = parse_label(label)
    record = label_of(label_id, site_scope=site_scope)
    if of_check and record.check_id != label_id:
        raise NotFound(label_id)
    changed = dataclasses.replace(record, label=label, labelled_at=time.time(), labelled_by=_who(moderator),
                                  source=source)
    return _store([changed], expect=expect, expect_at=expect_at)[0]


def unlabel(label_id: str, *, moderator: KeyRecord | str, site_scope: str | None, expect: str = "",
            expect_at: float | None = None) -> LabelRecord:
    """Take a label back (undo): no longer training data, audited, and a check's label requeues the check. With
    `expect`, only while the label is still that one (LabelConflict otherwise)."""
    label_of(label_id, site_scope=site_scope)
    try:
        removed = services().labels.remove(label_id, by=_who(moderator), expect=expect, expect_at=expect_at)
    except redis.RedisError as exc:
        raise StoreUnavailable(str(exc)) from exc
    if removed is None:
        raise NotFound(label_id)
    return removed


def label_of(label_id: str, *, site_scope: str | None) -> LabelRecord:
    """A stored label by id, within the caller's site (NotFound otherwise)."""
    try:
        record = services().labels.get(label_id)
    except redis.RedisError as exc:
        raise StoreUnavailable(str(exc)) from exc
    if record is None or (site_scope is not None and record.site != site_scope):
        raise NotFound(label_id)
    return record


def queue(*, site_scope: str | None, verdict: str | None = None, cursor: str | None = None,
          limit: int = 50) -> tuple[list[CheckRecord], str | None]:
    try:
        return services().checks.queue(site=site_scope, verdict=verdict, cursor=cursor, limit=limit)
    except redis.RedisError as exc:
        raise StoreUnavailable(str(exc)) from exc


def _store(records: list[LabelRecord], expect: str = "", expect_at: float | None = None) -> list[LabelRecord]:
    svc = services()
    try:
        stored = svc.labels.put_many(records, expect=expect, expect_at=expect_at)
    except redis.RedisError as exc:
        raise StoreUnavailable(str(exc)) from exc
    label_store.after_labels(svc.redis, svc.settings, stored)
    return stored


def _who(moderator: KeyRecord | str) -> str:
    if isinstance(moderator, KeyRecord):
        return f"{moderator.name} ({moderator.id})" if moderator.name else f"{moderator.role} ({moderator.id})"
    return str(moderator)
