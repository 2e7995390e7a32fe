"""Field-by-field comparison of nested records (run.json metrics, histories, eval results).

``pytest.approx`` compares flat numbers, sequences and dicts, but refuses nested structures on recent
pytest releases (9.x raises ``TypeError``); these tests compare records of any depth with ``math.isclose``
instead, so they do not depend on one pytest version, and a failure names the field that differs.
"""
from __future__ import annotations

import math
from numbers import Number


def assert_nested_close(actual, expected, *, rel: float = 1e-6, abs: float = 1e-12, path: str = "record") -> None:
    """Assert that two nested dict/list/number records are equal, numbers within ``rel``/``abs``.

    Dicts must have the same keys, sequences the same length; numbers (bools excluded) compare with
    ``math.isclose`` (NaN equals NaN), everything else with ``==``.
    """
    if isinstance(expected, dict):
        assert isinstance(actual, dict), f"{path}: expected a dict, got {type(actual).__name__}"
        assert actual.keys() == expected.keys(), f"{path}: keys {sorted(actual)} != {sorted(expected)}"
        for key in expected:
            assert_nested_close(actual[key], expected[key], rel=rel, abs=abs, path=f"{path}[{key!r}]")
    elif isinstance(expected, (list, tuple)):
        assert isinstance(actual, (list, tuple)), f"{path}: expected a sequence, got {type(actual).__name__}"
        assert len(actual) == len(expected), f"{path}: length {len(actual)} != {len(expected)}"
        for index, (a, e) in enumerate(zip(actual, expected)):
            assert_nested_close(a, e, rel=rel, abs=abs, path=f"{path}[{index}]")
    elif isinstance(expected, Number) and not isinstance(expected, bool):
        assert isinstance(actual, Number) and not isinstance(actual, bool), f"{path}: {actual!r} is not a number"
        both_nan = math.isnan(actual) and math.isnan(expected)
        assert both_nan or math.isclose(actual, expected, rel_tol=rel, abs_tol=abs), \
            f"{path}: {actual!r} != {expected!r} (rel {rel}, abs {abs})"
    else:
        assert actual == expected, f"{path}: {actual!r} != {expected!r}"
