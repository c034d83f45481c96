"""One @deploy per service, each with documented DEFAULTS that group_data overrides.

The settings schema reads every component's DEFAULTS as data, without importing it
(deploykit/declarations.py lists them, in the order docs/settings.md shows them).
"""
