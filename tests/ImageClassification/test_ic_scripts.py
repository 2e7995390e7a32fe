"""Every image-classification entry script end to end on digits, and their bad-input errors."""
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ImageClassification import (generate_mask, main_forget, main_random, main_random_lora, main_random_sfron,
                                 main_train, parse_result)

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


def test_sfron_optimizer_ablations_and_their_logs(original, tmp_path, capsys):
    """The logs the research code's parse_result.py reads (logs/dual_ll.log, logs/dual_sl.log) parse here too."""
    capsys.readouterr()
    logs = tmp_path / "logs"
    logs.mkdir()
    for optim in ("dual_ll", "dual_sl"):
        unlearn(main_random_sfron, tmp_path, optim, "--unlearn", "SFRon", "--sfron_iters", "4", "--unlearn_lr", "1e-4",
                "--retain_lr", "1e-3", "--optim", optim, model_path=original)
        (logs / f"{optim}.log").write_text(capsys.readouterr().out)
    ref = ["--ref", "5.39", "100", "94.25", "76.26"]  # the research code's parse_result.py reference
    from_logs = parse_result.main(["--log_paths", str(logs / "dual_ll.log"), str(logs / "dual_sl.log")] + ref)
    from_results = parse_result.main(["--log_paths", str(tmp_path / "dual_ll"), str(tmp_path / "dual_sl")] + ref)
    assert [(r["method"], r["unlearn_lr"], r["seeds"]) for r in from_logs] == [
        ("SFRon dual_ll", 1e-4, 1), ("SFRon dual_sl", 1e-4, 1)]
    assert [(r["method"], r["optim"]) for r in from_results] == [("SFRon", "dual_ll"), ("SFRon", "dual_sl")]
    for log_row, result_row in zip(from_logs, from_results):
        for metric in ("UA", "RA", "TA", "MIA", "avg_gap", "ToW"):
            assert log_row[metric] == pytest.approx(result_row[metric], abs=1e-9), metric


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


def conv_zero_fraction(state_dict) -> float:
    convs = [value for key, value in state_dict.items() if key.endswith("weight") and value.dim() == 4]
    return sum(int((w == 0).sum()) for w in convs) / sum(w.numel() for w in convs)


def saved_state(save_dir, method):
    return torch.load(save_dir / f"{method}checkpoint.pth.tar", weights_only=False)["state_dict"]


def test_pruning_methods_end_to_end(original, tmp_path):
    # GA_prune / GA_prune_bi: GA with their own SGD at --lr for --epochs, --rate of the remaining conv weights
    # pruned per state / per epoch; FT_prune_bi: --rate pruned in total over --unlearn_epochs
    runs = [(main_forget, "GA_prune", ["--epochs", "1", "--lr", "0.01", "--rate", "0.5"], 0.5),
            (main_forget, "GA_prune_bi", ["--epochs", "2", "--lr", "0.01", "--rate", "0.5"], 0.75),
            (main_forget, "FT_prune_bi", ["--unlearn_epochs", "2", "--rate", "0.5"], 0.5)]
    for entry, method, extra, zeros in runs:
        metrics, save_dir = unlearn(entry, tmp_path, method, "--unlearn", method, *extra, model_path=original)
        assert conv_zero_fraction(saved_state(save_dir, method)) == pytest.approx(zeros, abs=1e-4), method
        assert (save_dir / "eval_result.json").exists() and 0 <= metrics["test_acc"] <= 100


def test_rl_proximal_and_fisher_new_end_to_end(original, tmp_path, capsys):
    from ImageClassification.models import build_model
    before = torch.load(original, weights_only=False)["state_dict"]
    names = [name for name, _ in build_model("resnet20s", 10, (0.5,) * 3, (0.5,) * 3).named_parameters()]
    capsys.readouterr()
    _, save_dir = unlearn(main_random, tmp_path, "proximal", "--unlearn", "RL_proximal", "--mask_ratio", "0.5",
                          "--unlearn_lr", "0.01", model_path=original)
    retain = int(capsys.readouterr().out.split("number of retain dataset ")[1].split()[0])
    after = saved_state(save_dir, "RL_proximal")
    steps = math.ceil(60 / 128) + math.ceil(retain / 128)  # forget + retain batches of one epoch
    total = sum(before[n].numel() for n in names)
    unchanged = sum(int((after[n] == before[n]).sum()) for n in names)
    # after the last step at least int(mask_ratio * (T - 1) / T * n) weights are back at the epoch's start
    assert unchanged >= int(0.5 * ((steps - 1) / steps * total)) and unchanged < total

    metrics, save_dir = unlearn(main_forget, tmp_path, "fisher_new", "--unlearn", "fisher_new", "--alpha", "1e-6",
                                model_path=original)
    after = saved_state(save_dir, "fisher_new")
    assert all(torch.isfinite(after[n]).all() and not torch.equal(after[n], before[n]) for n in names)
    assert 0 <= metrics["test_acc"] <= 100


def test_main_random_lora_updates_are_low_rank_and_saved_merged(original, tmp_path):
    ranks = tmp_path / "ranks.json"
    ranks.write_text("0.25")
    metrics, save_dir = unlearn(main_random_lora, tmp_path, "lora", "--arch", "resnet20s_lora", "--unlearn", "RL",
                                "--unlearn_lr", "0.05", "--rank_config", str(ranks), model_path=original)
    before = torch.load(original, weights_only=False)["state_dict"]
    saved = torch.load(save_dir / "RLcheckpoint.pth.tar", weights_only=False)
    assert saved["arch"] == "resnet20s" and saved["state_dict"].keys() == before.keys()
    moved = 0
    for key, weight in saved["state_dict"].items():
        if key.endswith("weight") and weight.dim() in (2, 4):  # conv and linear: base + (1 / r) B A
            delta = (weight.double() - before[key].double()).reshape(weight.shape[0], -1)
            rank = math.ceil(0.25 * min(delta.shape[0], weight.shape[1]))
            singular = torch.linalg.svdvals(delta)  # beyond the rank: float32 rounding of the weights only
            assert singular[0] > 0 and singular[rank:].max() < 1e-3 * singular[0], key
            moved += 1
    assert moved == 20  # 19 convolutions and the classifier
    record = json.loads((save_dir / "run.json").read_text())
    assert record["config"]["mia"] == "salun" and record["config"]["rank_config"] == str(ranks)
    assert json.loads((save_dir / "eval_result.json").read_text())["UA"] == metrics["UA"]


@pytest.mark.parametrize("extra,message", [
    (["--unlearn", "salun"], "--unlearn: unknown value 'salun'"),
    (["--arch", "resnet1000"], "--arch: unknown value 'resnet1000'"),
    (["--dataset", "mnist"], "--dataset: unknown value 'mnist'"),
    (["--num_indexes_to_replace", "100000"], "--num_indexes_to_replace: 100000 is larger than the train set"),
    (["--class_to_replace", "10"], "--class_to_replace: must be -1 (any class) or 0..9, got 10"),
    (["--arch", "resnet44s"], "checkpoint is a resnet20s, but --arch is resnet44s"),
    (["--optim", "rmsprop"], "argument --optim: invalid choice: 'rmsprop'"),
    (["--optim", "dual_ll"], "--optim dual_ll: this optimizer ablation runs with --unlearn SFRon only"),
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


def test_demo_quick_runs_the_evidence_design_and_prints_table_and_reading(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    result = subprocess.run([sys.executable, str(REPO / "ImageClassification" / "demo.py"), "--quick",
                             "--out", str(tmp_path)], capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    out = result.stdout
    assert "| SalUn | sgd |" in out and "| SalUn | dual |" in out and "Doing nothing (the original model)" in out
    results = json.loads((tmp_path / "results.json").read_text())
    assert [(m["method"], m["optim"]) for m in results["methods"]] == [("SalUn", "sgd"), ("SalUn", "dual")]
    for record in results["methods"]:
        # every searched point is a finished run on the search seed, and the best one ran on every seed
        assert len(record["grid"]) >= 2 and set(record["per_seed"]) == {"1", "2"}
        best = min(record["grid"], key=lambda p: p["gap"])
        assert (best["forget_lr"], best["gap"]) == (record["best_forget_lr"], record["search_gap"])
        for point in record["grid"]:
            run = tmp_path / f"salun_{record['optim']}_lr{point['forget_lr']:g}_rlr{point['retain_lr']:g}" / "seed1"
            assert json.loads((run / "eval_result.json").read_text())["unlearn_lr"] == point["forget_lr"]
        # the best setting's trajectory: the original (epoch 0), then its one epoch's checkpoint, on both seeds
        stability = record["stability"]
        assert stability["seeds"] == 2 and [p["progress"] for p in stability["points"]] == [0, 1]
        assert stability["points"][-1]["UA"] == pytest.approx(record["seed_mean"]["UA"])
    assert set(results["retrain"]) == {"1", "2"} and results["step_budget"]["forget_set"] == 130
    for plot in ("gap_vs_lr.png", "stability.png"):
        assert (tmp_path / plot).read_bytes()[:4] == b"\x89PNG"
    assert "stability at the best settings" in out


def test_main_forget_applies_mask_path_to_every_method(original, tmp_path):
    """Unlike the research code (whose main_forget.py never passes the mask on), --mask_path masks FT too."""
    torch.save({"backbone.fc.weight": torch.zeros(10, 64)}, tmp_path / "fc_frozen.pt")
    _, save_dir = unlearn(main_forget, tmp_path, "ft", "--unlearn", "FT", "--unlearn_lr", "0.05", "--weight_decay", "0",
                          "--mask_path", str(tmp_path / "fc_frozen.pt"), model_path=original)
    before = torch.load(original, weights_only=False)["state_dict"]
    after = torch.load(save_dir / "FTcheckpoint.pth.tar", weights_only=False)["state_dict"]
    assert torch.equal(after["backbone.fc.weight"], before["backbone.fc.weight"])
    assert not torch.equal(after["backbone.conv1.weight"], before["backbone.conv1.weight"])


def test_retrain_sam_end_to_end(tmp_path, capsys):
    metrics, save_dir = unlearn(main_forget, tmp_path, "retrain_sam", "--unlearn", "retrain_sam", "--unlearn_lr", "0.1",
                                "--model_path", str(tmp_path / "never_read.pth.tar"))
    assert (save_dir / "retrain_samcheckpoint.pth.tar").is_file() and metrics["test_acc"] > 10
    assert json.loads((save_dir / "eval_result.json").read_text())["method"] == "retrain_sam"
