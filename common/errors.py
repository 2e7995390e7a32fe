"""Errors that end a script with one clear line instead of a traceback."""
from __future__ import annotations

import argparse
import functools
import sys
from typing import Callable, TypeVar

F = TypeVar("F", bound=Callable[..., object])


class UsageError(Exception):
    """Bad input from the user: a flag, file or value that cannot be used.

    The message should name the flag or file and say what was expected,
    e.g. ``--mask_path mask.pt: key 'fc.weight' has shape (10, 512), model expects (100, 512)``.
    """


def cli_main(func: F) -> F:
    """Decorate a script's ``main``: a :class:`UsageError` prints ``error: <message>``
    on stderr as a single line and exits with status 2 (argparse's code for usage errors)."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except UsageError as err:
            message = " ".join(str(err).split())
            print(f"error: {message}", file=sys.stderr)
            raise SystemExit(2) from None

    return wrapper  # type: ignore[return-value]


class ArgumentParser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` whose errors are one line (``error: <prog>: <message>``), exit 2.

    The stock parser prints its whole usage block before the error, which
    buries the one fact the user needs (``--optim: invalid choice 'adamx'``).
    ``--help`` still prints the full usage.
    """

    def error(self, message: str):  # type: ignore[override]
        print(f"error: {self.prog}: {' '.join(message.split())}", file=sys.stderr)
        raise SystemExit(2)
