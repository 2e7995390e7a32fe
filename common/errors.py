"""Errors that end a script with one clear line instead of a traceback."""
from __future__ import annotations

import argparse
import functools
import math
import sys
from typing import Any, Callable, Collection, Mapping, Optional, TypeVar

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


def _describe_config_value(value: Any) -> str:
    """A YAML value as the user wrote it: ``true``, ``null``, ``[1, 2]``, ``'maybe'``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    return repr(value)


def config_value(value: Any, kind: Any, label: str, choices: Optional[Collection[Any]] = None,
                 bool_spellings: Optional[Mapping[str, bool]] = None, many: bool = False,
                 nullable: bool = False) -> Any:
    """A value read from a YAML config, held to the checks of the flag it stands for; returns it converted.

    ``kind`` is the flag's type: ``bool`` for a switch (only a YAML boolean, or a string of
    ``bool_spellings`` -- the spellings the flag itself accepts -- so a quoted ``"false"`` is never a
    truthy string), a :class:`Bounded` (an unquoted number, or a string that converts as on the command
    line, held to its range; a YAML boolean is not a number), ``int``/``float``, ``str``/``None`` (a string,
    or a number written as one), or any other argparse ``type`` callable (given the value as text).
    ``many``: the flag takes several values (``nargs``): a list (or one scalar), each item checked.
    ``nullable``: ``null`` stands for the flag's unset default.  Anything else -- a list for a single
    value, a mapping, a string that does not convert, a value outside ``choices`` -- is a one-line
    :class:`UsageError` starting with ``label`` (``--config FILE: key``).
    """
    if value is None and nullable:
        return None
    if many:
        items = value if isinstance(value, list) else [value]
        return [config_value(item, kind, label, choices, bool_spellings) for item in items]
    shown = _describe_config_value(value)
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and bool_spellings and value in bool_spellings:
            return bool_spellings[value]
        raise UsageError(f"{label}: expected true or false, got {shown}")
    plain = {int: "an integer", float: "a number"}
    expected = kind.expected if isinstance(kind, Bounded) else plain.get(kind, "a value")
    if isinstance(value, (bool, list, dict)) or value is None:
        raise UsageError(f"{label}: expected {'a string' if kind in (None, str) else expected}, got {shown}")
    try:
        if isinstance(kind, Bounded):
            converted = kind(value) if isinstance(value, str) else kind.check(value)
            converted = float(converted) if kind.kind is float else converted
        elif kind in (int, float) and not isinstance(value, str):
            if kind is int and not isinstance(value, int):
                raise ValueError
            converted = kind(value)
        elif kind in (None, str):
            converted = value if isinstance(value, str) else str(value)
        else:
            converted = kind(value if isinstance(value, str) else str(value))
    except (argparse.ArgumentTypeError, TypeError, ValueError) as err:
        reason = str(err) if isinstance(err, argparse.ArgumentTypeError) else f"expected {expected}, got {shown}"
        raise UsageError(f"{label}: {reason}") from None
    if choices is not None and converted not in choices:
        raise UsageError(f"{label}: invalid choice {shown} (choose from {', '.join(map(str, choices))})")
    return converted


def action_value(action: argparse.Action, value: Any, label: str,
                 bool_spellings: Optional[Mapping[str, bool]] = None) -> Any:
    """:func:`config_value` for the flag of an argparse ``action`` (its type, choices, nargs and default)."""
    takes_no_value = action.nargs == 0 or isinstance(action, argparse.BooleanOptionalAction)
    many = action.nargs not in (None, "?", 0) or isinstance(action, argparse._AppendAction)
    return config_value(value, bool if takes_no_value else action.type, label, action.choices, bool_spellings,
                        many=many and not takes_no_value, nullable=action.default is None)


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
