"""The error the library raises for bad input (a recipe name, a flag value), which scripts print as one line."""
from __future__ import annotations

__all__ = ["UsageError"]


class UsageError(Exception):
    """Bad input from the user: a flag, file or value that cannot be used.

    The message should name the flag or file and say what was expected,
    e.g. ``--mask_path mask.pt: key 'fc.weight' has shape (10, 512), model expects (100, 512)``.
    """
