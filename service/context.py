"""The objects one app instance shares across its blueprints: settings, Redis, the served model and the stores.

`create_app` builds one `Services` and every face (JSON API, Akismet, console, ops) reaches it through
`services()`, so no blueprint builds its own Redis client or store.
"""
from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from flask import current_app

from training.apikeys import KeyStore
from training.checks import CheckStore, WriteBehind
from training.labels import LabelStore
from training.settings import Settings
from training.sites import SiteStore

if TYPE_CHECKING:
    import redis

EXTENSION = "winnow"


@dataclasses.dataclass
class Services:
    settings: Settings
    redis: redis.Redis
    serving: Any  # training.registry.ServingModel or anything with snapshot() -> (version, model)
    keys: KeyStore
    sites: SiteStore
    checks: CheckStore
    writer: WriteBehind
    labels: LabelStore


def services() -> Services:
    # Through the proxy's own object: every attribute read on a werkzeug proxy first fails (building an
    # AttributeError) before it is forwarded, about a microsecond each on the check path.
    return current_app._get_current_object().extensions[EXTENSION]
