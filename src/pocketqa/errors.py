"""Errors that pocketqa reports to users as one clear line (CLI exit code 2)."""


class PocketQAError(Exception):
    """A user-facing error: bad input, bad config, missing file or optional dependency.

    The CLI prints ``str(error)`` on one line and exits with code 2, without a traceback.
    """


class SquadFormatError(PocketQAError, ValueError):
    """A SQuAD JSON file is malformed; the message names file, article and question id."""


class ConfigError(PocketQAError, ValueError):
    """A recipe or command configuration is invalid; the message lists every problem.

    Attributes:
        problems: The individual problems, when several were found at once.
    """

    def __init__(self, message: str, problems: list[str] | None = None):
        super().__init__(message)
        self.problems = list(problems) if problems else []


def missing_extra(package: str, extra: str) -> ImportError:
    """Builds the ImportError raised when an optional dependency is not installed."""
    return ImportError(f"{package} is not installed; install it with: pip install 'pocketqa[{extra}]'")
