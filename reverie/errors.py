"""What Reverie tells its user: errors a user can fix, warnings about what it worked around, and
notes about what it is doing.

The CLI prints a `UserError` as one line `reverie: error: ...` and exits with code 2. A
`ReverieWarning` is printed as one line `reverie: warning: ...` (no source line; Python's warning
filters still apply to it), and `notice` prints `reverie: ...` on standard error (in a
data-parallel job only on rank 0: the other ranks run the same code and would repeat it).
"""

from __future__ import annotations

import os
import sys
import warnings


class UserError(Exception):
    """Bad input from the user: the message names the problem and the fix."""


class ConfigError(UserError):
    """An unknown config key, a value of the wrong type, or an unknown preset."""


class EnvError(UserError):
    """An environment that cannot be made, or whose spaces Reverie cannot handle."""


class CheckpointError(UserError):
    """A checkpoint that is missing, corrupt, or does not match the config."""


class TrainingError(Exception):
    """A run that cannot go on (e.g. updates keep producing NaN). The CLI prints it as one line
    and exits with code 1; checkpoints written before it are intact."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C stopped a run after it wrote its checkpoint and said so; nothing more is printed."""


class ReverieWarning(UserWarning):
    """Something Reverie worked around (a corrupt file skipped, a feature turned off)."""


def warn(message: str) -> None:
    """Warn with a `ReverieWarning`: one line on standard error unless filtered."""
    warnings.warn(message, ReverieWarning, stacklevel=2)


def notice(message: str) -> None:
    """Tell the user what a run does (resuming, settings ignored): `reverie: ...` on standard error."""
    if os.environ.get("RANK", "0") == "0":
        print(f"reverie: {message}", file=sys.stderr, flush=True)


def plural(count: int, noun: str, plural_form: str | None = None) -> str:
    """`1 update`, `2 updates`, `1,060 episodes`."""
    return f"{count:,} {noun if count == 1 else plural_form or noun + 's'}"


_format_other_warnings = warnings.formatwarning


def _format_warning(message, category, filename, lineno, line=None) -> str:
    if isinstance(category, type) and issubclass(category, ReverieWarning):
        return f"reverie: warning: {message}\n"
    return _format_other_warnings(message, category, filename, lineno, line)


warnings.formatwarning = _format_warning
