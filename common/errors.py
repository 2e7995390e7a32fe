"""Errors that end a script with one clear line instead of a traceback."""
from __future__ import annotations

import argparse
import functools
import math
import sys
from typing import Any, Callable, Optional, TypeVar

from dualoptim.errors import UsageError

F = TypeVar("F", bound=Callable[..., object])


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


class Bounded:
    """An argparse ``type``: a number of ``kind`` (``int`` or ``float``) within bounds.

    ``type=positive_int`` turns ``--epochs -1`` or ``--epochs 1.5`` into
    ``argument --epochs: expected an integer >= 1, got '-1'``.  Floats must be
    finite.  :class:`ArgumentParser` also checks values that did not come
    through the command line (defaults from a ``--config`` file) with
    :meth:`check`.
    """

    def __init__(self, kind: type, low: Optional[float] = None, high: Optional[float] = None,
                 low_open: bool = False, high_open: bool = False) -> None:
        self.kind, self.low, self.high, self.low_open, self.high_open = kind, low, high, low_open, high_open
        noun = "an integer" if kind is int else "a number"
        if low is not None and high is not None:
            self.expected = f"{noun} in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
        elif low is not None:
            self.expected = f"{noun} {'>' if low_open else '>='} {low:g}"
        else:
            self.expected = noun

    def __call__(self, text: str) -> Any:
        try:
            value = self.kind(text)
        except (TypeError, ValueError):
            raise argparse.ArgumentTypeError(f"expected {self.expected}, got {text!r}") from None
        return self.check(value, shown=repr(text))

    def check(self, value: Any, shown: Optional[str] = None) -> Any:
        """``value`` if it is a number of the right kind within the bounds, else ``ArgumentTypeError``
        (which quotes ``shown``, the text the value was read from, or else ``repr(value)``)."""
        number_types = (int,) if self.kind is int else (int, float)
        ok = isinstance(value, number_types) and not isinstance(value, bool)
        if ok and self.kind is float:
            ok = math.isfinite(value)
        if ok and self.low is not None:
            ok = value > self.low if self.low_open else value >= self.low
        if ok and self.high is not None:
            ok = value < self.high if self.high_open else value <= self.high
        if not ok:
            raise argparse.ArgumentTypeError(f"expected {self.expected}, got {shown or repr(value)}")
        return value


positive_int = Bounded(int, 1)
non_negative_int = Bounded(int, 0)
positive_float = Bounded(float, 0, low_open=True)
non_negative_float = Bounded(float, 0)
fraction = Bounded(float, 0, 1)  # a share of weights, samples, ... in [0, 1]


class ArgumentParser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` whose errors are one line (``error: <prog>: <message>``), exit 2.

    The stock parser prints its whole usage block before the error, which
    buries the one fact the user needs (``--optim: invalid choice 'adamx'``).
    ``--help`` still prints the full usage.  After parsing, every value of a
    :class:`Bounded` flag is checked again, so a default set from a config file
    (``set_defaults``, which argparse does not convert) is held to the same range.
    """

    def parse_known_args(self, args=None, namespace=None):  # type: ignore[override]
        namespace, extras = super().parse_known_args(args, namespace)
        for action in self._actions:
            value = getattr(namespace, action.dest, None)
            if not isinstance(action.type, Bounded) or value is None:
                continue
            try:
                for item in value if isinstance(value, (list, tuple)) else [value]:
                    action.type.check(item)
            except argparse.ArgumentTypeError as err:
                self.error(f"argument {'/'.join(action.option_strings) or action.dest}: {err}")
        return namespace, extras

    def error(self, message: str):  # type: ignore[override]
        print(f"error: {self.prog}: {' '.join(message.split())}", file=sys.stderr)
        raise SystemExit(2)
