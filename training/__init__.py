"""Winnow's learning core: comment schema, features, model and fast scorer, stores, registry and jobs.

Nothing here imports Flask; `service/` calls into this package, never the other way round.
"""
