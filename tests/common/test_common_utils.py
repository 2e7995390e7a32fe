"""common.io, common.saliency, common.device, common.seed, dualoptim.registry, common.errors, common.schedules."""
import json
import math
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn

from common.device import get_device
from common.errors import UsageError
from common.io import (atomic_path, atomic_torch_save, atomic_write_json, load_torch_file, read_json,
                       write_run_record, ensure_writable_dir)
from dualoptim.registry import Registry
from common.saliency import (GradientMask, accumulate_gradients, check_mask, fisher_ratio_masks, load_mask,
                             mask_filename, save_masks, top_fraction_masks)
from common.schedules import cosine_decay
from common.seed import seed_everything


# ------------------------------------------------------------------ io

def test_atomic_json_round_trip_with_tensors_and_numpy(tmp_path):
    path = atomic_write_json({"acc": torch.tensor(93.5), "n": np.int64(3), "v": [np.float32(0.5)]},
                             tmp_path / "out" / "r.json")
    assert json.loads(path.read_text()) == {"acc": 93.5, "n": 3, "v": [0.5]}
    assert os.listdir(tmp_path / "out") == ["r.json"]  # no temporary left behind


def test_failed_atomic_write_keeps_the_old_file(tmp_path):
    target = tmp_path / "model.pt"
    atomic_torch_save({"w": torch.ones(2)}, target)
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"partial")
            raise RuntimeError("crash mid-write")
    assert torch.equal(torch.load(target)["w"], torch.ones(2))
    assert os.listdir(tmp_path) == ["model.pt"]


@pytest.mark.parametrize("mask,file_mode,folder_mode", [(0o022, 0o644, 0o755), (0o027, 0o640, 0o750),
                                                     (0o077, 0o600, 0o700)])
def test_atomic_outputs_follow_the_umask(tmp_path, mask, file_mode, folder_mode):
    """Reproduced: every checkpoint was 0600 (mkstemp's mode), unreadable to a group sharing a results folder."""
    from common.io import atomic_directory

    old = os.umask(mask)
    try:
        atomic_torch_save({"w": torch.ones(1)}, tmp_path / "ckpt.pt")
        atomic_write_json({"a": 1}, tmp_path / "run.json")
        with atomic_directory(tmp_path / "model") as folder:
            (folder / "config.json").write_text("{}")
    finally:
        os.umask(old)
    assert (tmp_path / "ckpt.pt").stat().st_mode & 0o777 == file_mode
    assert (tmp_path / "run.json").stat().st_mode & 0o777 == file_mode
    assert (tmp_path / "model").stat().st_mode & 0o777 == folder_mode


def test_read_yaml_one_line_errors(tmp_path):
    from common.io import read_yaml

    (tmp_path / "latin1.yaml").write_bytes(b"name: caf\xe9\n")
    (tmp_path / "broken.yaml").write_text("a: [1,\n")
    (tmp_path / "ok.yaml").write_text("lr: 1.0e-5\nalternate: true\n")
    assert read_yaml(tmp_path / "ok.yaml") == {"lr": 1e-5, "alternate": True}
    for name, message in (("latin1.yaml", r"latin1.yaml: not UTF-8 text \(byte 9: invalid continuation byte\)"),
                          ("broken.yaml", r"broken.yaml: not valid YAML \("),
                          ("missing.yaml", r"missing.yaml: file not found")):
        with pytest.raises(UsageError, match=r"^--config \S*" + message):
            read_yaml(tmp_path / name)
    with pytest.raises(UsageError, match=r"^--cfg \S+: not a file$"):
        read_yaml(tmp_path, "--cfg")


class Refused(str):
    """An expected :func:`common.errors.config_value` error (a part of its one line)."""


CONFIG_VALUES = [  # (value, kind, extra, the converted value or Refused(part of the error))
    (5, "positive_int", {}, 5), ("5", "positive_int", {}, 5), ("1e-5", "positive_float", {}, 1e-5),
    (2, "positive_float", {}, 2.0), (True, "positive_int", {}, Refused("expected an integer >= 1, got true")),
    (5.0, "positive_int", {}, Refused("expected an integer >= 1, got 5.0")), (0, "positive_int", {}, Refused("got 0")),
    ([1, 2], "positive_float", {}, Refused("expected a number > 0, got [1, 2]")),
    ("x", "float", {}, Refused("expected a number, got 'x'")),
    (True, "bool", {}, True), ("false", "bool", {}, Refused("expected true or false, got 'false'")),
    ("false", "bool", {"bool_spellings": {"false": False}}, False),
    (None, "bool", {}, Refused("expected true or false, got null")),
    (None, "str", {"nullable": True}, None), (None, "str", {}, Refused("expected a string, got null")),
    (7, "str", {}, "7"), ({"a": 1}, "str", {}, Refused("expected a string, got {'a': 1}")),
    ("b", "str", {"choices": ("a",)}, Refused("invalid choice 'b'")),
    ([1, 2], "positive_int", {"many": True}, [1, 2]), (3, "positive_int", {"many": True}, [3]),
    ([1, -1], "positive_int", {"many": True}, Refused("expected an integer >= 1, got -1")),
]


@pytest.mark.parametrize("value,kind,extra,expected", CONFIG_VALUES)
def test_config_values_pass_their_flags_checks(value, kind, extra, expected):
    """A YAML value gets its flag's checks (issue 25: ``lr: [1, 2]``, ``seed: true`` and a quoted ``"false"``
    were taken as they were)."""
    from common import errors

    kinds = {"positive_int": errors.positive_int, "positive_float": errors.positive_float, "float": float,
             "bool": bool, "str": str}
    if isinstance(expected, Refused):
        with pytest.raises(UsageError, match=r"^--config c.yaml: key: .*" + re.escape(expected)):
            errors.config_value(value, kinds[kind], "--config c.yaml: key", **extra)
    else:
        result = errors.config_value(value, kinds[kind], "--config c.yaml: key", **extra)
        assert result == expected and type(result) is type(expected)


def test_load_torch_file_errors_name_flag_and_file(tmp_path):
    with pytest.raises(UsageError, match=r"--model_path .*missing.pt: file not found"):
        load_torch_file(tmp_path / "missing.pt", "--model_path")
    good = atomic_torch_save({"w": torch.arange(1000.0)}, tmp_path / "good.pt")
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[:200])
    with pytest.raises(UsageError, match=r"--model_path .*truncated.pt: cannot be read"):
        load_torch_file(truncated, "--model_path")
    with pytest.raises(UsageError, match="is a folder"):
        load_torch_file(tmp_path, "--model_path")
    assert torch.equal(load_torch_file(good, "--model_path")["w"], torch.arange(1000.0))


def test_read_json_corrupt_file(tmp_path):
    bad = tmp_path / "eval_result.json"
    bad.write_text('{"UA": 1')
    with pytest.raises(UsageError, match="eval_result.json: not valid JSON"):
        read_json(bad)


def test_run_record_has_config_seed_versions_metrics(tmp_path):
    import argparse
    args = argparse.Namespace(seed=7, unlearn_lr=0.1, save_dir=tmp_path)
    path = write_run_record(tmp_path, args, {"UA": 12.5})
    record = json.loads(path.read_text())
    assert record["seed"] == 7 and record["config"]["unlearn_lr"] == 0.1
    assert record["config"]["save_dir"] == str(tmp_path)
    assert record["metrics"] == {"UA": 12.5}
    assert record["host"]["torch_build"] == torch.__version__
    assert torch.__version__.startswith(record["versions"]["torch"])


def test_ensure_writable_dir_rejects_a_file(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(UsageError, match="--save_dir .*not a folder"):
        ensure_writable_dir(tmp_path / "f")


# ------------------------------------------------------------------ saliency

def test_top_fraction_masks_keep_exact_fraction_of_highest_scores():
    scores = {"a": torch.tensor([[5.0, 1.0], [3.0, 0.0]]), "b": torch.tensor([4.0, 2.0, -1.0, 6.0, 0.5, 7.0])}
    masks = top_fraction_masks(scores, thresholds=(0.1, 0.5, 1.0))
    # 10 weights; top 5 by score: 7, 6, 5, 4, 3
    assert masks[0.5]["a"].tolist() == [[1, 0], [1, 0]]
    assert masks[0.5]["b"].tolist() == [1, 0, 0, 1, 0, 1]
    assert int(sum(m.sum() for m in masks[0.1].values())) == 1 and masks[0.1]["b"][5] == 1
    assert all(m.all() for m in masks[1.0].values())
    assert masks[0.5]["a"].shape == (2, 2)


def test_fisher_ratio_masks_keep_forget_dominated_weights():
    forget, remain = {"w": torch.tensor([1.0, 0.0, 2.0, 3.0])}, {"w": torch.tensor([1.0, 1.0, 4.0, 0.0])}
    masks = fisher_ratio_masks(forget, remain, (1.0, 0.4))
    # ratios: 1, ~0, 0.5, 3e15
    assert masks[1.0]["w"].tolist() == [1.0, 0.0, 0.0, 1.0]
    assert masks[0.4]["w"].tolist() == [1.0, 0.0, 1.0, 1.0]


def test_save_and_load_masks_validated_against_model(tmp_path):
    model = nn.Linear(3, 2)
    scores = {n: torch.randn_like(p) for n, p in model.named_parameters()}
    paths = save_masks(top_fraction_masks(scores, (0.5,)), tmp_path)
    assert paths == [tmp_path / "with_0.5.pt"] and mask_filename(1.0) == "with_1.0.pt"
    mask = load_mask(tmp_path / "with_0.5.pt", model)
    assert set(mask) == {"weight", "bias"}
    with pytest.raises(UsageError, match=r"--mask_path: key 'weight' has shape \(2, 3\), the model expects \(4, 3\)"):
        check_mask(mask, nn.Linear(3, 4))
    with pytest.raises(UsageError, match="not a parameter of the model"):
        check_mask({"fc.weight": torch.ones(2, 3)}, model)
    with pytest.raises(UsageError, match="expected a dict"):
        check_mask([1, 2], model)


def test_gradient_mask_zeroes_masked_gradients_only():
    model = nn.Linear(2, 2)
    mask = {"weight": torch.tensor([[1.0, 0.0], [0.0, 1.0]])}
    model(torch.ones(1, 2)).sum().backward()
    bias_grad = model.bias.grad.clone()
    GradientMask(model, mask)()
    assert model.weight.grad.tolist() == [[1.0, 0.0], [0.0, 1.0]]
    assert torch.equal(model.bias.grad, bias_grad)


def test_accumulate_gradients_mean_and_fisher():
    model = nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(2.0)
    xs = [torch.tensor([[1.0]]), torch.tensor([[3.0]])]
    # loss = w * x -> grad = x; mean grad = 2, mean squared grad = 5
    mean = accumulate_gradients(model, xs, lambda m, x: m(x).sum())
    fisher = accumulate_gradients(model, xs, lambda m, x: m(x).sum(), power=2)
    assert mean["weight"].item() == pytest.approx(2.0)
    assert fisher["weight"].item() == pytest.approx(5.0)
    assert model.weight.grad is None
    # clipped to norm 2 per batch: grads 1 and 2 -> mean 1.5; mean squared (1 + 4) / 2
    assert accumulate_gradients(model, xs, lambda m, x: m(x).sum(), grad_clip=2.0)["weight"].item() == \
        pytest.approx(1.5)
    # loss chunks add up: (w x) + (2 w x) -> grad 3 x; mean squared (9 + 81) / 2
    chunks = accumulate_gradients(model, xs, lambda m, x: (m(x).sum() * k for k in (1.0, 2.0)), power=2)
    assert chunks["weight"].item() == pytest.approx(45.0)


# ------------------------------------------------------------------ device, seed, registry, errors

def test_get_device_cpu_and_clear_error_for_missing_cuda():
    assert get_device("cpu") == torch.device("cpu")
    assert get_device(None).type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(UsageError, match="--device cuda: CUDA is not available"):
            get_device("cuda")
    with pytest.raises(UsageError, match="--device 'banana'"):
        get_device("banana")


def test_seed_everything_reproduces_draws():
    seed_everything(3)
    a = (torch.rand(3), np.random.rand(3))
    seed_everything(3)
    b = (torch.rand(3), np.random.rand(3))
    assert torch.equal(a[0], b[0]) and np.array_equal(a[1], b[1])


def test_bounded_types_accept_the_range_and_name_it_otherwise():
    import argparse

    from common.errors import Bounded, fraction, positive_float, positive_int

    assert positive_int("3") == 3 and positive_float("1e-5") == 1e-5 and fraction("1") == 1.0
    half_open = Bounded(float, 0, 1, high_open=True)
    assert half_open("0") == 0.0
    for parse, text, expected in [(positive_int, "0", "an integer >= 1"), (positive_int, "2.5", "an integer >= 1"),
                                  (positive_float, "0", "a number > 0"), (positive_float, "nan", "a number > 0"),
                                  (positive_float, "inf", "a number > 0"), (fraction, "1.01", "a number in [0, 1]"),
                                  (half_open, "1", "a number in [0, 1)")]:
        with pytest.raises(argparse.ArgumentTypeError, match=rf"expected {re.escape(expected)}, got '{text}'"):
            parse(text)
    with pytest.raises(argparse.ArgumentTypeError, match="got True"):
        positive_int.check(True)  # a YAML boolean is not a count


def test_argument_parser_checks_config_defaults_too(capsys):
    from common.errors import ArgumentParser, positive_int

    parser = ArgumentParser(prog="train")
    parser.add_argument("--epochs", type=positive_int, default=5)
    parser.add_argument("--sizes", type=positive_int, nargs="+", default=[1])
    assert parser.parse_args(["--epochs", "2"]).epochs == 2
    parser.set_defaults(sizes=[4, 0])  # as a --config file does; argparse would not convert or check it
    with pytest.raises(SystemExit) as exit_info:
        parser.parse_args([])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == "error: train: argument --sizes: expected an integer >= 1, got 0\n"


def test_output_paths_are_checked_without_creating_anything(tmp_path):
    from common.io import check_writable_dir, ensure_writable_file, ensure_writable_plot

    (tmp_path / "file").write_text("x")
    assert check_writable_dir(tmp_path / "new" / "deeper") == tmp_path / "new" / "deeper"
    with pytest.raises(UsageError, match=r"--save_dir .*file/sub: cannot create folder \(.*file is a file\)"):
        check_writable_dir(tmp_path / "file" / "sub")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]
    with pytest.raises(UsageError, match="--save_csv .*: is a folder, expected a file name"):
        ensure_writable_file(tmp_path, "--save_csv")
    with pytest.raises(UsageError, match=r"--plot .*gap.docx: unsupported file type '.docx'; expected one of .*\.png"):
        ensure_writable_plot(tmp_path / "gap.docx")
    assert ensure_writable_plot(tmp_path / "plots" / "gap.PDF") == tmp_path / "plots" / "gap.PDF"
    assert (tmp_path / "plots").is_dir()


def test_registry_lookup_and_unknown_name():
    registry = Registry("--arch")

    @registry.register("tiny", "tiny_alias")
    def tiny():
        return "net"

    assert registry.get("tiny_alias") is tiny and "tiny" in registry and len(registry) == 2
    with pytest.raises(UsageError, match="--arch: unknown value 'huge'; expected one of tiny, tiny_alias"):
        registry.get("huge")
    with pytest.raises(KeyError):
        registry.register("tiny")(tiny)


def test_cli_main_prints_one_line_and_exits_2(tmp_path):
    script = tmp_path / "s.py"
    script.write_text(
        "from common.errors import UsageError, cli_main\n"
        "@cli_main\n"
        "def main():\n"
        "    raise UsageError('--dataset foo:\\n unknown')\n"
        "main()\n")
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr == "error: --dataset foo: unknown\n"


def test_atomic_directory_replaces_whole_folder_or_nothing(tmp_path):
    from common.io import atomic_directory
    target = tmp_path / "model"
    with atomic_directory(target) as tmp:
        (tmp / "a.txt").write_text("1")
    with pytest.raises(RuntimeError):
        with atomic_directory(target) as tmp:
            (tmp / "b.txt").write_text("half")
            raise RuntimeError("crash")
    assert sorted(p.name for p in target.iterdir()) == ["a.txt"]
    with atomic_directory(target) as tmp:
        (tmp / "c.txt").write_text("2")
    assert sorted(p.name for p in target.iterdir()) == ["c.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_setup_logging_writes_file_once_per_call(tmp_path):
    from common.logging import setup_logging
    setup_logging("dualoptim-test", tmp_path / "log.txt").info("first")
    logger = setup_logging("dualoptim-test", tmp_path / "log2.txt")
    logger.info("second")
    for handler in logger.handlers:
        handler.flush()
    assert "first" in (tmp_path / "log.txt").read_text()
    assert (tmp_path / "log2.txt").read_text().count("second") == 1
    assert len(logger.handlers) == 2


def test_cosine_decay_goes_from_value_to_zero():
    assert cosine_decay(10.0, 0, 100) == 10.0
    assert cosine_decay(10.0, 50, 100) == pytest.approx(5.0)
    assert cosine_decay(25.0, 5, 10) == pytest.approx(12.5)
    assert cosine_decay(10.0, 100, 100) == pytest.approx(0.0)
    assert cosine_decay(4.0, 1, 4) == pytest.approx(4.0 * (1 + math.cos(math.pi / 4)) / 2)
