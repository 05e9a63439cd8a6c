"""Every Redis key Winnow uses, in one screen.

App data lives under the `winnow:` prefix; RQ keeps its own `rq:` keys and the rate limiter its `LIMITS:` keys in
the same database, so one REDIS_URL serves a deployment. Add new keys here, never as literals elsewhere.
"""
PREFIX = "winnow:"

# API keys and tokens (stored hashed)
KEY = PREFIX + "key:{digest}"                 # hash: id, role, site, name, created_at, revoked
KEYS_INDEX = PREFIX + "keys"                  # set of digests
KEY_IDS = PREFIX + "keyids"                   # hash: public key id -> digest
SITE = PREFIX + "site:{site}"                 # hash: per-site settings (thresholds, shadow mode, unsure policy)
SITES_INDEX = PREFIX + "sites"                # set of sites with settings of their own
SITES_INDEXED = PREFIX + "sites:indexed"      # string: set once SITES_INDEX holds every site hash
DIRECTORY_VERSION = PREFIX + "directory:version"  # string: a new random value at every change of keys or site settings

CONSOLE_SESSION = PREFIX + "console:session:{id}"  # string: the key id a console session signed in with (TTL)

# Checked comments (retention-limited) and the moderation queue
CHECK = PREFIX + "check:{id}"                 # hash: the comment, verdict, score, site, created_at
# {verdict} is all|ham|unsure|spam and {site} a site URL or "*" for every site (never a URL, so never ambiguous)
QUEUE = PREFIX + "queue:{verdict}:{site}"     # zset: unlabelled check ids by |score - 0.5|
QUEUE_BY_TIME = PREFIX + "queue-time"         # zset: queued check ids by check time, to trim expired ones
QUEUE_INDEXES = PREFIX + "queue-indexes"      # set: the name of every QUEUE zset, so the trim never scans keys
QUEUE_INDEXED = PREFIX + "queue-indexes:complete"  # string: set once QUEUE_INDEXES names every QUEUE zset
QUEUE_TRIM = PREFIX + "queue-trim"            # string with a TTL: one process trims expired ids at a time
SAME_COMMENT = PREFIX + "same:{digest}"       # string with the retention TTL: the newest queued check of a comment
SETTLED = PREFIX + "settled:{digest}"          # set with the retention TTL: checks of that comment given a label

# Labels and their audit trail
# Label ids are global (a labelled check keeps its check id), so the site lives in the hash, not the key name.
LABEL = PREFIX + "label:{id}"                 # hash: the labelled comment and its current label
LABELS_BY_TIME = PREFIX + "labels:{label}:{site}"  # zset: label ids by time; {label} all|ham|spam, {site} URL or "*"
LABEL_AUDIT = PREFIX + "audit:{id}"           # list of JSON: who, when, from, to
OVERTURNS = PREFIX + "overturns"              # zset: label ids that contradict their check's verdict, by time

# Model registry
MODEL_VERSION = PREFIX + "model:version:{version}"  # hash: artifact bytes, metadata JSON, signature
MODEL_VERSIONS = PREFIX + "model:versions"          # zset: versions by creation time
MODEL_CURRENT = PREFIX + "model:current"            # string: the serving version
MODEL_SEQ = PREFIX + "model:seq"                    # counter: version numbers
MODEL_HISTORY = PREFIX + "model:history"            # list (newest first): promotions, rollbacks, rejections as JSON
MODEL_BOOTSTRAP_LOCK = PREFIX + "model:bootstrap"   # lock: one process seeds an empty registry from the starter

# Learning loop (retrain single flight, triggers, run records)
RETRAIN_LOCK = PREFIX + "retrain:lock"              # lock held while a retrain runs (extended by a heartbeat)
RETRAIN_ACTIVE = PREFIX + "retrain:active"          # string: id of the queued or running retrain (here-N: in a shell)
RETRAIN_PENDING = PREFIX + "retrain:pending"        # JSON: the one follow-up asked for while a retrain runs
RETRAIN_SEQ = PREFIX + "retrain:seq"                # counter: retrain job ids
RETRAIN_RUNS = PREFIX + "retrain:runs"              # list (newest first): every retrain run's record as JSON
RETRAIN_CONTINUED = PREFIX + "retrain:continued:{job_id}"  # string: the job an abandoned retrain continues as
RETRAIN_NEW_LABELS = PREFIX + "retrain:new_labels"  # counter: labels since the last retrain started
RETRAIN_OVERTURNS = PREFIX + "retrain:overturns"    # counter: overturned verdicts since the last retrain started

# Akismet protocol usage, per site key and calendar month (UTC), for /1.2/key-sites and /1.2/usage-limit
AKISMET_USAGE = PREFIX + "akismet:usage:{key_id}:{month}"  # hash: "{counter}:{site}" -> count

# Console activity charts
ACTIVITY = PREFIX + "activity:{day}"          # hash per UTC day: checks|site, verdict:v|site, labels|site, by|site|who

# Per-key rate limits (service/limits.py): fixed-window counters, outside the winnow: prefix like the limits package's own
RATE_LIMIT = "LIMITS:{window}"                # string counter with a TTL of the window; window = limiter's item key
