"""Errors a user can fix. The CLI prints them without a traceback and exits with code 2."""

from __future__ import annotations


class UserError(Exception):
    """A mistake in the user's input (config, data, weights), not a bug in tlexp.

    The message must say what is wrong, the value received, and how to fix it.
    """

    exit_code = 2


class ConfigError(UserError):
    """The config has one or more problems; ``problems`` lists them, one line each."""

    def __init__(self, problems: list[str], source: str | None = None):
        self.problems = list(problems)
        self.source = source
        head = f"Invalid config{f' {source}' if source else ''}: {len(self.problems)} problem(s)"
        super().__init__("\n".join([head] + [f"  - {p}" for p in self.problems]))


class DataError(UserError):
    """The dataset on disk cannot be used as configured."""


class WeightsError(UserError):
    """Backbone weights are missing, corrupt or do not fit the backbone."""
