"""The user errors every layer raises: the bottom of the package, importing nothing of it.

A ``ConfigError`` (or a subclass) is a mistake in what the user gave — a config key, a
file that is not a crystal table, an input that names nothing importable. The CLI prints
its one-line message and exits with status 2; anything else is a bug and keeps its
traceback.
"""

from __future__ import annotations


class ConfigError(ValueError):
    """A configuration that cannot run; the message names the offending key."""


class TableError(ConfigError):
    """A file that is not a crystal table (a user error: the CLI prints one line, exit 2)."""
