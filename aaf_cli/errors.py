"""Domain errors. Each is turned into one line on stderr and an exit code by the CLI."""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130


class AafError(Exception):
    """Base class of every error that aaf reports to the user without a traceback."""

    exit_code = EXIT_FAILED


class ConfigError(AafError):
    """The experiment config (file, YAML, schema or a --set override) is invalid."""

    exit_code = EXIT_BAD_INPUT

    def __init__(
        self,
        source: str,
        key: str,
        message: str,
        line: int | None = None,
        column: int | None = None,
        others: tuple[str, ...] = (),
    ) -> None:
        self.source = source
        self.key = key
        self.message = message
        self.line = line
        self.column = column
        #: The config's other errors, each a line like this one's (``aaf validate`` prints
        #: them all; other commands name the first and count the rest).
        self.others = others
        where = source
        if line is not None:
            where += f":{line}" + (f":{column}" if column is not None else "")
        super().__init__(": ".join(part for part in (where, key, message) if part))


class RunError(AafError):
    """A run folder is missing, unreadable or of an unknown format."""

    exit_code = EXIT_BAD_INPUT


class UsageError(AafError):
    """A command-line argument is invalid."""

    exit_code = EXIT_BAD_INPUT
