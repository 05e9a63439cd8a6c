"""Winnow's web face: the JSON API, the Akismet protocol, the moderator console and operations routes."""
