"""User-facing errors: one line naming the problem and the fix, exit status 2."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class WorkbenchError(Exception):
    """Bad input from the user (config, data, checkpoint, env id...).

    The CLI prints ``error: <message>`` on one line and exits with status 2.
    """


def suggest(name: str, choices: Iterable[str]) -> str:
    """Return ``" (did you mean 'x'?)"`` for the closest choice, or ``""``."""
    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def unknown(kind: str, name: str, choices: Iterable[str]) -> WorkbenchError:
    """Build the standard error for an unknown name among ``choices``."""
    choices = sorted(choices)
    return WorkbenchError(f"unknown {kind} '{name}'{suggest(name, choices)}; valid: {', '.join(choices)}")
