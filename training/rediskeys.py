"""Every Redis key Winnow uses, in one screen.

App data lives under the `winnow:` prefix; RQ keeps its own `rq:` keys and the rate limiter its `LIMITS:` keys in
the same database, so one REDIS_URL serves a deployment. Add new keys here, never as literals elsewhere.
"""
PREFIX = "winnow:"

# API keys and tokens (stored hashed)
KEY = PREFIX + "key:{digest}"                 # hash: role, site, created_at, revoked, label
KEYS_INDEX = PREFIX + "keys"                  # set of digests
SITE = PREFIX + "site:{site}"                 # hash: per-site settings (thresholds, shadow mode, unsure policy)

# Checked comments (retention-limited) and the moderation queue
CHECK = PREFIX + "check:{id}"                 # hash: the comment, verdict, score, site, created_at
QUEUE = PREFIX + "queue:{site}"               # zset: unlabelled check ids by uncertainty

# Labels and their audit trail
LABEL = PREFIX + "label:{site}:{id}"          # hash: the labelled comment and its current label
LABELS_BY_TIME = PREFIX + "labels:{site}"     # zset: label ids by time
LABEL_AUDIT = PREFIX + "audit:{site}:{id}"    # list: who, when, from, to

# Model registry
MODEL_VERSION = PREFIX + "model:version:{version}"  # hash: artifact bytes, metadata JSON, signature
MODEL_VERSIONS = PREFIX + "model:versions"          # zset: versions by creation time
MODEL_CURRENT = PREFIX + "model:current"            # string: the serving version
