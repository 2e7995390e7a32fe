"""Kill an image-classification run with SIGKILL mid-epoch, rerun it with --resume: the same bits as a straight run.

The straight and resumed runs run in-process (one thread), the killed one as a program
(``OMP_NUM_THREADS=1``), so the comparison also covers a resume in a fresh process.
"""
import json
from pathlib import Path

import pytest
import torch

from ImageClassification import main_random, main_random_sfron, main_train
from ImageClassification.arg_parser import parse_config
from ImageClassification.models import build_model_from_config

DIGITS = ["--dataset", "digits", "--arch", "resnet20s", "--input_size", "8", "--batch_size", "256", "--device", "cpu",
          "--num_indexes_to_replace", "60"]
# RL with DualOptim: per epoch 1 forget step (AdamW) then 5 retain steps (SGD), snapshots every 4 steps.
RL_DUAL = ["--unlearn", "RL", "--optim", "dual", "--unlearn_lr", "1e-3", "--retain_lr", "0.01",
           "--unlearn_epochs", "2", "--save_every", "4"]


@pytest.fixture(scope="module")
def original(tmp_path_factory):
    """A freshly initialised resnet20s in the research checkpoint format (unlearning needs no trained model)."""
    args = parse_config(DIGITS)
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("original") / "model.pth.tar"
    torch.save({"state_dict": build_model_from_config(args).state_dict(), "arch": "resnet20s"}, path)
    return path


def state_dict(path, key="state_dict"):
    return torch.load(path)[key]


def assert_bitwise_equal(a, b):
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def metrics(save_dir):
    return json.loads((Path(save_dir) / "run.json").read_text())["metrics"]


# dual_sf: the schedule-free forget optimizer swaps its average in for every checkpoint_<e>.pt and for the
# final model, while snapshots keep the weights it trains on (dualoptim/optim/lrfree.py)
@pytest.mark.parametrize("optim", ["dual", pytest.param("dual_sf", marks=pytest.mark.slow)])
def test_sigkill_mid_epoch_then_resume_equals_straight_run(optim, original, tmp_path, killed_run, one_thread, capsys):
    if optim == "dual_sf":
        pytest.importorskip("schedulefree")
    argv = DIGITS + RL_DUAL + ["--optim", optim, "--model_path", str(original)]
    straight, interrupted = tmp_path / "straight", tmp_path / "interrupted"
    main_random.main(argv + ["--save_dir", str(straight)])
    # step 10 = epoch 1, retain batch 3; the last snapshot (step 8) is after retain batch 1 of that pass
    killed_run("ImageClassification.main_random", argv + ["--save_dir", interrupted], kill_at=10)
    assert sorted(p.name for p in interrupted.iterdir() if not p.name.startswith(".")) == [
        "checkpoint_1.pt", "resume_state.pt"]
    snapshot = torch.load(interrupted / "resume_state.pt")
    assert snapshot["loop"]["epoch"] == 1 and snapshot["loop"]["partial"]["batch"] == 1
    assert set(snapshot["objects"]["optimizer"]) == {"forget", "retain"}  # both DualOptim halves
    capsys.readouterr()

    main_random.main(argv + ["--save_dir", str(interrupted), "--resume"])
    assert f"resuming from {interrupted / 'resume_state.pt'}" in capsys.readouterr().out
    assert_bitwise_equal(state_dict(straight / "RLcheckpoint.pth.tar"), state_dict(interrupted / "RLcheckpoint.pth.tar"))
    for epoch in (1, 2):
        assert_bitwise_equal(torch.load(straight / f"checkpoint_{epoch}.pt"),
                             torch.load(interrupted / f"checkpoint_{epoch}.pt"))
    assert (json.loads((straight / "eval_result.json").read_text())
            == json.loads((interrupted / "eval_result.json").read_text()))
    assert metrics(straight) == metrics(interrupted)
    assert not (interrupted / "resume_state.pt").exists()  # a finished run removes its snapshot


def test_finished_results_are_refused_and_a_truncated_snapshot_is_one_line(original, tmp_path, capsys):
    save_dir = tmp_path / "run"
    save_dir.mkdir()
    (save_dir / "eval_result.json").write_text('{"UA": 1.0}')
    (save_dir / "RLcheckpoint.pth.tar").write_bytes(b"finished")
    argv = DIGITS + RL_DUAL + ["--model_path", str(original), "--save_dir", str(save_dir)]
    with pytest.raises(SystemExit):
        main_random.main(argv)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "already holds finished results (eval_result.json)" in err
    assert "--overwrite" in err and sorted(p.name for p in save_dir.iterdir()) == [
        "RLcheckpoint.pth.tar", "eval_result.json"]

    snapshot = save_dir / "resume_state.pt"
    snapshot.write_bytes(b"PK\x03\x04 half a zip")
    with pytest.raises(SystemExit) as exit_info:
        main_random.main(argv + ["--resume"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.count("\n") == 1
    assert err.startswith(f"error: --resume {snapshot}: cannot be read as a torch checkpoint") and "truncated" in err
    assert (save_dir / "eval_result.json").read_text() == '{"UA": 1.0}'


@pytest.mark.slow
def test_main_train_resumes_history_best_and_last(tmp_path, killed_run, one_thread):
    argv = DIGITS + ["--epochs", "3", "--lr", "0.05", "--decreasing_lr", "2", "--save_every", "4"]
    straight, interrupted = tmp_path / "straight", tmp_path / "interrupted"
    main_train.main(argv + ["--save_dir", str(straight)])
    killed_run("ImageClassification.main_train", argv + ["--save_dir", interrupted], kill_at=9)  # epoch 1
    main_train.main(argv + ["--save_dir", str(interrupted), "--resume"])
    for name in ("0checkpoint.pth.tar", "0model_SA_best.pth.tar"):
        a, b = torch.load(straight / name), torch.load(interrupted / name)
        assert_bitwise_equal(a["state_dict"], b["state_dict"])
        assert a["result"] == b["result"] and a["epoch"] == b["epoch"]
    assert metrics(straight) == metrics(interrupted)


@pytest.mark.slow
def test_sfron_resumes_its_iteration_loop(original, tmp_path, killed_run, one_thread):
    argv = DIGITS + ["--unlearn", "SFRon", "--optim", "dual", "--unlearn_lr", "1e-3", "--retain_lr", "0.01",
                     "--sfron_iters", "12", "--sfron_freq", "5", "--save_every", "4", "--model_path", str(original)]
    straight, interrupted = tmp_path / "straight", tmp_path / "interrupted"
    main_random_sfron.main(argv + ["--save_dir", str(straight)])
    killed_run("ImageClassification.main_random_sfron", argv + ["--save_dir", interrupted], kill_at=10)
    main_random_sfron.main(argv + ["--save_dir", str(interrupted), "--resume"])
    assert_bitwise_equal(state_dict(straight / "SFRoncheckpoint.pth.tar"),
                         state_dict(interrupted / "SFRoncheckpoint.pth.tar"))
    assert metrics(straight) == metrics(interrupted)


def test_retrain_sam_resumes_with_its_momentum(tmp_path, killed_run, one_thread):
    """SAM's state (the base SGD's momentum buffers) is in the snapshot: killed and resumed equals straight."""
    from ImageClassification import main_forget

    argv = DIGITS + ["--unlearn", "retrain_sam", "--unlearn_lr", "0.05", "--unlearn_epochs", "2", "--save_every", "4"]
    straight, interrupted = tmp_path / "straight", tmp_path / "interrupted"
    main_forget.main(argv + ["--save_dir", str(straight)])
    killed_run("ImageClassification.main_forget", argv + ["--save_dir", interrupted], kill_at=9)  # epoch 1
    snapshot = torch.load(interrupted / "resume_state.pt", weights_only=False)
    assert any("momentum_buffer" in s for s in snapshot["objects"]["optimizer"]["shared"]["state"].values())
    main_forget.main(argv + ["--save_dir", str(interrupted), "--resume"])
    assert_bitwise_equal(state_dict(straight / "retrain_samcheckpoint.pth.tar"),
                         state_dict(interrupted / "retrain_samcheckpoint.pth.tar"))


@pytest.mark.parametrize("method,extra,kill_at", [
    # 5 retain steps per epoch; pruned (at random) at the end of epoch 0; killed at epoch 2, batch 2,
    # resumed from the snapshot after epoch 1, batch 3, whose zeros are the mask
    ("FT_prune_bi", ["--unlearn_epochs", "3", "--rate", "0.75", "--random_prune", "--save_every", "4"], 12),
    # one forget step per epoch; state 0 (2 steps) writes no snapshot, state 1 is killed at its 3rd step and
    # resumed after state 0 is recomputed
    ("GA_prune", ["--epochs", "3", "--lr", "0.01", "--pruning_times", "2", "--rate", "0.5", "--random_prune",
                  "--save_every", "1"], 5),
])
def test_pruning_methods_resume_bitwise(original, tmp_path, killed_run, one_thread, method, extra, kill_at):
    argv = DIGITS + ["--unlearn", method, "--model_path", str(original)] + extra
    straight, interrupted = tmp_path / "straight", tmp_path / "interrupted"
    main_random.main(argv + ["--save_dir", str(straight)])
    killed_run("ImageClassification.main_random", argv + ["--save_dir", interrupted], kill_at=kill_at)
    assert (interrupted / "resume_state.pt").exists()
    main_random.main(argv + ["--save_dir", str(interrupted), "--resume"])
    assert_bitwise_equal(state_dict(straight / f"{method}checkpoint.pth.tar"),
                         state_dict(interrupted / f"{method}checkpoint.pth.tar"))
    assert metrics(straight) == metrics(interrupted)
