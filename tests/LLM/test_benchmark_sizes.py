"""benchmarks/llm_tofu.py size presets: --size fills what the command line leaves out; --quick still works."""
import importlib.util
from pathlib import Path

import pytest

from common.errors import UsageError

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "llm_tofu.py"


@pytest.fixture(scope="module")
def llm_tofu():
    spec = importlib.util.spec_from_file_location("llm_tofu", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_presets_fill_unset_sizes_and_explicit_flags_win(llm_tofu):
    medium = llm_tofu.parse_args(["--size", "medium"])
    assert (medium.num_forget, medium.num_retain, medium.num_layers, medium.epochs, medium.lr) == (60, 540, 4, 5, 3e-4)
    assert llm_tofu.parse_args(["--size", "medium", "--num_forget", "10", "--lr", "1e-3"]).num_forget == 10
    assert llm_tofu.parse_args(["--size", "medium", "--epochs=3"]).epochs == 3  # the --flag=value form too
    quick = llm_tofu.parse_args(["--quick"])
    assert quick.size == "quick" and (quick.num_forget, quick.hidden_size) == (40, 64)
    full = llm_tofu.parse_args([])
    assert (full.size, full.num_forget, full.num_retain, full.threads) == ("full", 400, 3600, None)
    with pytest.raises(UsageError, match="--quick: contradicts --size medium"):
        llm_tofu.parse_args(["--quick", "--size", "medium"])
