"""Every image-classification entry script end to end on digits, and their bad-input errors."""
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ImageClassification import (generate_mask, main_forget, main_random, main_random_sfron, main_train,
                                 parse_result)

REPO = Path(__file__).resolve().parents[2]
COMMON = ["--dataset", "digits", "--arch", "resnet20s", "--batch_size", "128", "--device", "cpu",
          "--num_indexes_to_replace", "60"]


@pytest.fixture(scope="module")
def original(tmp_path_factory):
    save_dir = tmp_path_factory.mktemp("original")
    main_train.main(COMMON + ["--epochs", "2", "--lr", "0.1", "--decreasing_lr", "1", "--save_dir", str(save_dir)])
    return save_dir / "0model_SA_best.pth.tar"


def unlearn(entry, tmp_path, name, *extra, model_path=None):
    save_dir = tmp_path / name
    argv = COMMON + ["--save_dir", str(save_dir), "--unlearn_epochs", "1"] + list(extra)
    if model_path is not None:
        argv += ["--model_path", str(model_path)]
    metrics = entry.main(argv)
    return metrics, save_dir


def test_main_train_writes_checkpoints_record_and_refuses_overwrite(original, capsys):
    save_dir = original.parent
    checkpoint = torch.load(original)
    assert checkpoint["arch"] == "resnet20s" and "state_dict" in checkpoint
    assert (save_dir / "0checkpoint.pth.tar").exists()
    record = json.loads((save_dir / "run.json").read_text())
    assert record["config"]["epochs"] == 2 and record["metrics"]["best_val_acc"] > 20
    with pytest.raises(SystemExit):
        main_train.main(COMMON + ["--epochs", "1", "--save_dir", str(save_dir)])
    assert "already holds finished results" in capsys.readouterr().err


def test_main_train_periodic_cosine_lr_is_the_research_code_schedule(tmp_path, capsys):
    main_train.main(COMMON + ["--epochs", "2", "--lr", "0.1", "--periodic_cosine_lr", "--save_dir", str(tmp_path)])
    out = capsys.readouterr().out
    # lr * (1 + cos(pi * (epoch - 10) / 10)) / 2 at the start of each epoch: 0 at epoch 0
    assert "Epoch #0, Learning rate: 0.0\n" in out
    assert f"Epoch #1, Learning rate: {0.1 * ((1 + math.cos(math.pi * (1 - 10) / 10)) / 2)}\n" in out


def test_rl_and_salun_with_sgd_and_dual(original, tmp_path, capsys):
    metrics, save_dir = unlearn(main_random, tmp_path, "rl", "--unlearn", "RL", "--unlearn_lr", "0.02",
                                "--optim", "sgd", model_path=original)
    out = capsys.readouterr().out
    for line in ("retain acc:", "forget acc:", "test acc:", "MIA:"):
        assert line in out
    assert {p.name for p in save_dir.iterdir()} >= {"RLcheckpoint.pth.tar", "RLeval_result.pth.tar",
                                                   "checkpoint_1.pt", "eval_result.json", "run.json"}
    result = json.loads((save_dir / "eval_result.json").read_text())
    assert result["method"] == "RL" and result["UA"] == pytest.approx(100 - result["forget_acc"])

    generate_mask.main(COMMON + ["--model_path", str(original), "--save_dir", str(tmp_path / "mask")])
    mask = torch.load(tmp_path / "mask" / "with_0.5.pt")
    kept = sum(m.sum().item() for m in mask.values()) / sum(m.numel() for m in mask.values())
    assert kept == pytest.approx(0.5, abs=1e-4) and len(list((tmp_path / "mask").glob("with_*.pt"))) == 10

    before = torch.load(original)["state_dict"]
    _, salun_dir = unlearn(main_random, tmp_path, "salun", "--unlearn", "RL", "--unlearn_lr", "1e-3",
                           "--retain_lr", "0.01", "--optim", "dual", "--mask_path", str(tmp_path / "mask" / "with_0.1.pt"),
                           model_path=original)
    after = torch.load(salun_dir / "RLcheckpoint.pth.tar")["state_dict"]
    key = "backbone.fc.weight"
    assert json.loads((salun_dir / "eval_result.json").read_text())["method"] == "SalUn"
    assert not torch.equal(before[key], after[key])


def test_sfron_and_main_forget_methods_then_parse_result(original, tmp_path, capsys):
    capsys.readouterr()
    unlearn(main_random_sfron, tmp_path, "sfron", "--unlearn", "SFRon", "--sfron_iters", "6", "--unlearn_lr", "1e-3",
            "--optim", "dual", model_path=original)
    (tmp_path / "sfron.log").write_text(capsys.readouterr().out)
    for method in ("SCRUB", "GA", "FT"):
        unlearn(main_forget, tmp_path, method.lower(), "--unlearn", method, "--unlearn_lr", "0.01", model_path=original)
        (tmp_path / f"{method}.log").write_text(capsys.readouterr().out)
    unlearn(main_forget, tmp_path, "retrain", "--unlearn", "retrain", "--unlearn_lr", "0.1")
    (tmp_path / "retrain.log").write_text(capsys.readouterr().out)
    rows = parse_result.main(["--log_paths", str(tmp_path)])
    assert {r["method"] for r in rows} == {"SFRon", "SCRUB", "GA", "FT", "retrain"}
    retrain = next(r for r in rows if r["method"] == "retrain")
    assert retrain["avg_gap"] == 0.0
    # the printed logs (the research code's format, `model` / `alpha` headers) give the same table
    from_logs = parse_result.main(["--log_paths", str(tmp_path / "*.log")])
    assert sorted((r["method"], r["unlearn_lr"]) for r in from_logs) == sorted(
        (f"{r['method']} {r['optim']}", r["unlearn_lr"]) for r in rows)
    assert sorted(r["avg_gap"] for r in from_logs) == pytest.approx(sorted(r["avg_gap"] for r in rows), abs=1e-9)


def test_amp_and_channels_last_run_end_to_end(original, tmp_path):
    metrics, save_dir = unlearn(main_forget, tmp_path, "scrub_amp", "--unlearn", "SCRUB", "--unlearn_lr", "1e-3",
                                "--retain_lr", "0.01", "--optim", "dual", "--amp", "--channels_last",
                                model_path=original)
    config = json.loads((save_dir / "run.json").read_text())["config"]
    assert config["amp"] and config["amp_dtype"] == "bfloat16" and config["channels_last"]
    assert 50 < metrics["test_acc"] <= 100 and (save_dir / "eval_result.json").exists()


def test_same_seed_same_numbers(original, tmp_path):
    first, _ = unlearn(main_random, tmp_path, "a", "--unlearn", "RL", "--unlearn_lr", "0.02", model_path=original)
    second, _ = unlearn(main_random, tmp_path, "b", "--unlearn", "RL", "--unlearn_lr", "0.02", model_path=original)
    assert first == second


@pytest.mark.parametrize("extra,message", [
    (["--unlearn", "salun"], "--unlearn: unknown value 'salun'"),
    (["--arch", "resnet1000"], "--arch: unknown value 'resnet1000'"),
    (["--dataset", "mnist"], "--dataset: unknown value 'mnist'"),
    (["--num_indexes_to_replace", "100000"], "--num_indexes_to_replace: 100000 is larger than the train set"),
    (["--class_to_replace", "10"], "--class_to_replace: must be -1 (any class) or 0..9, got 10"),
    (["--arch", "resnet44s"], "checkpoint is a resnet20s, but --arch is resnet44s"),
    (["--optim", "rmsprop"], "argument --optim: invalid choice: 'rmsprop'"),
    (["--unlearn_lr", "-1"], "argument --unlearn_lr: expected a number > 0, got '-1'"),
    (["--dataset", "cifar10", "--data", "/nonexistent/cifar.zip"], "--data /nonexistent/cifar.zip: not found"),
])
def test_bad_input_is_one_line_and_keeps_existing_results(original, tmp_path, capsys, extra, message):
    save_dir = tmp_path / "run"
    save_dir.mkdir()
    (save_dir / "keep.txt").write_text("earlier result")
    argv = COMMON + ["--unlearn", "RL", "--model_path", str(original), "--save_dir", str(save_dir)] + extra
    with pytest.raises(SystemExit) as exit_info:
        main_random.main(argv)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.count("\n") == 1 and message in err, err
    assert sorted(p.name for p in save_dir.iterdir()) == ["keep.txt"]


def test_bad_checkpoints_and_masks(original, tmp_path, capsys):
    corrupt = tmp_path / "corrupt.pth.tar"
    corrupt.write_bytes(original.read_bytes()[:500])
    wrong_mask = tmp_path / "mask.pt"
    torch.save({"backbone.fc.weight": torch.ones(3, 3)}, wrong_mask)
    cases = [(["--model_path", str(tmp_path / "missing.pt")], "--model_path", "file not found"),
             (["--model_path", str(corrupt)], "--model_path", "may be corrupt or truncated"),
             (["--model_path", str(original), "--mask_path", str(wrong_mask)], "--mask_path",
              "key 'backbone.fc.weight' has shape (3, 3), the model expects (10, 64)")]
    for extra, flag, message in cases:
        with pytest.raises(SystemExit):
            main_random.main(COMMON + ["--unlearn", "RL", "--save_dir", str(tmp_path / "out")] + extra)
        err = capsys.readouterr().err
        assert err.startswith(f"error: {flag}") and message in err and err.count("\n") == 1, err
    assert not (tmp_path / "out" / "eval_result.json").exists()


def test_script_as_a_program_exit_code_and_message(tmp_path):
    result = subprocess.run([sys.executable, str(REPO / "ImageClassification" / "main_forget.py"), "--unlearn", "nope",
                             "--dataset", "digits", "--save_dir", str(tmp_path)], capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: --unlearn: unknown value 'nope'; expected one of " + result.stderr.split("expected one of ")[1].strip()]


def test_demo_quick_runs_every_step_and_prints_the_table(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    result = subprocess.run([sys.executable, str(REPO / "ImageClassification" / "demo.py"), "--quick",
                             "--out", str(tmp_path)], capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    table = result.stdout
    for method in ("SalUn | dual", "SalUn | sgd", "SFRon | dual", "SFRon | sgd", "SCRUB | dual", "SCRUB | sgd",
                   "retrain | sgd"):
        assert f"| {method} |" in table
    assert (tmp_path / "avg_gap.png").exists() and (tmp_path / "salun_dual" / "seed2" / "log.txt").exists()
