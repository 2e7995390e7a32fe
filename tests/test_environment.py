"""The suite runs its subprocesses with its own interpreter, and its record comparison catches differences."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
from nested import assert_nested_close


def test_bare_python_in_bash_is_the_test_interpreter():
    # The sweep scripts call `python`; it must be the interpreter running the suite, activated or not.
    result = subprocess.run(["bash", "-c", "python -c 'import sys; print(sys.prefix)'"],
                            capture_output=True, text=True, check=True)
    assert os.path.realpath(result.stdout.strip()) == os.path.realpath(sys.prefix)


def test_nested_close_accepts_equal_records_within_tolerance():
    record = {"metrics": {"acc": 0.5, "loss": float("nan")}, "history": [{"epoch": 0, "lr": [0.1, 1e-3]}]}
    close = {"metrics": {"acc": 0.5 + 1e-9, "loss": float("nan")}, "history": [{"epoch": 0, "lr": [0.1, 1e-3]}]}
    assert_nested_close(close, record)


@pytest.mark.parametrize("changed, message", [
    ({"metrics": {"acc": 0.51, "loss": 1.0}, "history": [{"epoch": 0}]}, "record['metrics']['acc']"),
    ({"metrics": {"acc": 0.5}, "history": [{"epoch": 0}]}, "record['metrics']: keys"),
    ({"metrics": {"acc": 0.5, "loss": 1.0}, "history": []}, "record['history']: length"),
    ({"metrics": {"acc": 0.5, "loss": 1.0}, "history": [{"epoch": "0"}]}, "record['history'][0]['epoch']"),
])
def test_nested_close_names_the_field_that_differs(changed, message):
    record = {"metrics": {"acc": 0.5, "loss": 1.0}, "history": [{"epoch": 0}]}
    with pytest.raises(AssertionError, match=message.replace("[", r"\[").replace("]", r"\]")):
        assert_nested_close(changed, record)
