"""Every DDPM entry script end to end on a tiny UNet and synthetic 8x8 data, plus their errors."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from dualoptim.optimizers import DualOptim, SharedOptim
from ImageGeneration.DDPM import (
    classifier_evaluation, evaluator, generate_mask, main_forget, main_train, sample, save_base_dataset,
    train_classifier)
from ImageGeneration.DDPM.checkpoints import load_checkpoint, load_run_checkpoint
from ImageGeneration.DDPM.config import to_namespace
from ImageGeneration.DDPM.networks import build_unet
from ImageGeneration.DDPM.optimizers import build_unlearn_optimizer
from ImageGeneration.DDPM.network import ConditionalModel

from ig_fixtures import IMAGE_SIZE, N_CLASSES, TINY_CONFIG, fake_load_arrays

CPU = ["--device", "cpu"]


def patched(monkeypatch):
    for module in (main_train, generate_mask, main_forget, train_classifier, evaluator):
        monkeypatch.setattr(module, "load_arrays", fake_load_arrays)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("ddpm")


@pytest.fixture(scope="module")
def config_path(workdir):
    path = workdir / "tiny.yml"
    path.write_text(yaml.safe_dump(TINY_CONFIG))
    return str(path)


@pytest.fixture(scope="module")
def pretrained(workdir, config_path):
    with pytest.MonkeyPatch.context() as mp:
        patched(mp)
        return main_train.main(["--config", config_path, "--exp_root", str(workdir), "--mode", "pretrain"] + CPU)


def read_json(path):
    return json.loads(Path(path).read_text())


def test_unet_training_step_and_shapes():
    config = to_namespace(TINY_CONFIG)
    unet = build_unet(config.model, config.data)
    x = torch.randn(3, 1, IMAGE_SIZE, IMAGE_SIZE)
    out = unet(x, torch.tensor([0, 5, 9]), class_labels=torch.tensor([0, 1, N_CLASSES])).sample
    assert out.shape == x.shape
    assert unet.config.num_class_embeds == N_CLASSES + 1  # the last one is the null class


def test_pretrain_writes_checkpoint_and_record(pretrained):
    run_dir = Path(pretrained)
    assert run_dir.parent.name == "pretrain" and run_dir.parent.parent.name == "digits"
    state = torch.load(run_dir / "ckpts" / "ckpt.pth")
    assert state["step"] == TINY_CONFIG["training"]["n_iters"] - 1
    assert state["trained_classes"] == list(range(N_CLASSES))
    assert set(state["ema"]) == {k for k, _ in build_unet(to_namespace(TINY_CONFIG).model,
                                                           to_namespace(TINY_CONFIG).data).named_parameters()}
    record = read_json(run_dir / "run.json")
    assert record["seed"] == 1234 and record["metrics"]["n_iters"] == 3
    assert record["yaml_config"] == TINY_CONFIG
    # the frozen config's record: the flags in the parser's order, --dataset settled on the YAML config's
    assert list(record["config"]) == list(vars(main_train.parse_args([])))
    assert record["config"]["dataset"] == "digits" and record["config"]["mode"] == "pretrain"
    assert (run_dir / "logs" / "config.yaml").exists()


def test_same_seed_same_numbers(pretrained, workdir, config_path, monkeypatch):
    patched(monkeypatch)
    again = main_train.main(["--config", config_path, "--exp_root", str(workdir / "again")] + CPU)
    assert read_json(Path(again) / "run.json")["metrics"]["final_loss"] == \
        read_json(Path(pretrained) / "run.json")["metrics"]["final_loss"]


def test_retrain_excludes_class_and_sampling_it_is_refused(workdir, config_path, monkeypatch, capsys):
    patched(monkeypatch)
    run_dir = main_train.main(["--config", config_path, "--exp_root", str(workdir), "--mode", "retrain",
                               "--label_to_forget", "2"] + CPU)
    assert torch.load(Path(run_dir) / "ckpts/ckpt.pth")["trained_classes"] == [0, 1, 3]
    with pytest.raises(SystemExit) as exit_info:
        sample.main(["--ckpt_folder", run_dir, "--config", config_path, "--classes_to_generate", "2"] + CPU)
    assert exit_info.value.code == 2
    assert "never trained on class(es) [2]" in capsys.readouterr().err
    assert not (Path(run_dir) / "class_samples").exists()


def test_masks(pretrained, config_path, monkeypatch):
    patched(monkeypatch)
    common = ["--ckpt_folder", pretrained, "--config", config_path, "--label_to_forget", "1"] + CPU
    mask_dir = Path(generate_mask.main(common + ["--mode", "salun", "--threshold", "0.25", "0.5"]))
    assert mask_dir == Path(pretrained) / "mask_1"
    unet = load_checkpoint(pretrained, torch.device("cpu")).unet
    total = sum(p.numel() for p in unet.parameters())
    for threshold in (0.25, 0.5):
        mask = torch.load(mask_dir / f"with_{threshold}.pt")
        assert set(mask) == {name for name, _ in unet.named_parameters()}
        assert sum(int(v.sum()) for v in mask.values()) == int(total * threshold)
    # the research code's train.py mode name for the Fisher diagonals
    generate_mask.main(common + ["--mode", "generate_fisher", "--threshold", "1.0", "3.0"])
    forget, remain = torch.load(mask_dir / "forget_fisher.pt"), torch.load(mask_dir / "remain_fisher.pt")
    strict = torch.load(mask_dir / "fisher_3.0.pt")
    for name, value in torch.load(mask_dir / "fisher_1.0.pt").items():
        expected = ((forget[name] + 1e-15) / (remain[name] + 1e-15) >= 1.0).float()
        assert torch.equal(value, expected)
        assert (strict[name] <= value).all()  # a higher threshold keeps a subset
    record = read_json(mask_dir / "run_sfron.json")["config"]  # the mode and dataset as settled, the parser's keys
    assert (record["mode"], record["dataset"], record["threshold"]) == ("sfron", "digits", [1.0, 3.0])
    assert list(record) == list(vars(generate_mask.parse_args(common)))
    # generate_fisher_mask.py's command: --ckpt_folder is the folder of stored diagonals (sfron by default)
    generate_mask.main(["--ckpt_folder", str(mask_dir), "--threshold", "0.5"] + CPU)
    assert read_json(mask_dir / "run_sfron.json")["config"]["dataset"] is None  # no checkpoint read
    loose = torch.load(mask_dir / "fisher_0.5.pt")
    for name, value in loose.items():
        assert torch.equal(value, ((forget[name] + 1e-15) / (remain[name] + 1e-15) >= 0.5).float())
    assert sum(int(v.sum()) for v in loose.values()) >= sum(int(v.sum()) for v in strict.values())


def test_loading_a_checkpoint_leaves_the_flags_as_parsed(pretrained):
    """The run's dataset is the checkpoint's (``loaded.dataset``), for the frozen config to take; the flags
    are not changed."""
    args = sample.parse_args(["--ckpt_folder", pretrained] + CPU)
    loaded = load_run_checkpoint(args, torch.device("cpu"), "sample")
    assert loaded.dataset == "digits" and args.dataset is None


def test_mask_gradients_are_clipped_per_batch_as_the_research_code(pretrained, config_path, tmp_path, monkeypatch):
    """Every batch's gradient is clipped to optim.grad_clip before it is accumulated: with a clip far
    below the gradient norm each squared-gradient term has norm^2 = clip^2, so the Fisher sums to
    n_batches * clip^2 / n_batches = clip^2 over all parameters."""
    patched(monkeypatch)
    config = yaml.safe_load(Path(config_path).read_text())
    config["optim"]["grad_clip"] = 1e-3
    clipped = tmp_path / "clip.yml"
    clipped.write_text(yaml.safe_dump(config))
    mask_dir = Path(generate_mask.main(["--ckpt_folder", pretrained, "--config", str(clipped), "--mode", "sfron",
                                        "--save_dir", str(tmp_path / "m")] + CPU))
    for name in ("forget_fisher.pt", "remain_fisher.pt"):
        total = sum(float(v.sum()) for v in torch.load(mask_dir / name).values())
        assert total == pytest.approx(1e-6, rel=1e-3)


@pytest.mark.parametrize("extra,schedule,optimizer", [
    (["--mode", "sfron", "--unlearn_loss", "adaga", "--forget_alpha", "10", "--decay_forget_alpha"],
     "alternate", "SharedOptim"),
    (["--mode", "sfron", "--unlearn_loss", "adaga", "--dual", "--forget_lr", "1e-3"], "alternate", "DualOptim"),
    (["--mode", "salun", "--unlearn_loss", "rl", "--optim", "dual_sa"], "alternate", "DualOptim(forget=SGD, retain=AdamW)"),
    (["--mode", "salun", "--unlearn_loss", "rl", "--remain_alpha", "1e-3"], "joint", "SharedOptim"),
    (["--mode", "salun", "--unlearn_loss", "rl", "--dual"], "alternate", "DualOptim"),
    (["--mode", "ga"], "joint", "SharedOptim"),
    (["--mode", "rl", "--dual"], "alternate", "DualOptim"),
    (["--mode", "rl", "--dual", "--amp", "--amp_dtype", "float16"], "alternate", "DualOptim"),
])
def test_forget_modes(pretrained, workdir, config_path, monkeypatch, extra, schedule, optimizer):
    patched(monkeypatch)
    mask_dir = Path(pretrained) / "mask_0"
    if not (mask_dir / "with_0.5.pt").exists():
        generate_mask.main(["--ckpt_folder", pretrained, "--config", config_path, "--mode", "salun"] + CPU)
    if "sfron" in extra or "salun" in extra:
        extra = extra + ["--mask_path", str(mask_dir / "with_0.5.pt")]
    run_dir = Path(main_forget.main(["--ckpt_folder", pretrained, "--config", config_path,
                                     "--exp_root", str(workdir)] + extra + CPU))
    assert run_dir.parts[-5:-3] == ("digits", "forget_0")
    assert run_dir.parent.name.endswith("_dual") == ("--dual" in extra)
    assert run_dir.parent.name.endswith("_dual_sa") == ("dual_sa" in extra)
    record = read_json(run_dir / "run.json")
    assert record["metrics"]["schedule"] == schedule
    assert record["metrics"]["optimizer"].startswith(optimizer)
    state = torch.load(run_dir / "ckpts/ckpt.pth")
    assert set(state["optimizer"]) == ({"forget", "retain"} if optimizer.startswith("DualOptim") else {"shared"})
    before = load_checkpoint(pretrained, torch.device("cpu")).unet.state_dict()
    changed = [k for k, v in state["model"].items() if not torch.equal(v, before[k])]
    assert changed, "forgetting did not move any weight"
    assert all(v.dtype == torch.float32 for v in state["model"].values() if v.is_floating_point())  # also --amp


def test_masked_forgetting_leaves_unselected_weights(pretrained, workdir, config_path, monkeypatch):
    patched(monkeypatch)
    generate_mask.main(["--ckpt_folder", pretrained, "--config", config_path, "--mode", "salun",
                        "--threshold", "0.1"] + CPU)
    mask = torch.load(Path(pretrained) / "mask_0" / "with_0.1.pt")
    run_dir = main_forget.main(["--ckpt_folder", pretrained, "--config", config_path, "--exp_root", str(workdir),
                                "--mode", "salun", "--mask_path", str(Path(pretrained) / "mask_0/with_0.1.pt")] + CPU)
    after = torch.load(Path(run_dir) / "ckpts/ckpt.pth")["model"]
    before = load_checkpoint(pretrained, torch.device("cpu")).unet.state_dict()
    for name, m in mask.items():
        frozen = m == 0
        assert torch.equal(after[name][frozen], before[name][frozen]), name


@pytest.mark.slow  # two forgetting runs (~8 s); the default suite runs --keep_snapshots in test_ig_ddpm_evidence
def test_keep_snapshots_keeps_each_snapshot_model_before_the_last(pretrained, workdir, config_path, monkeypatch):
    """--keep_snapshots (ours): the tiny config snapshots every 2 of its 3 steps, so ckpt_2.pth is kept beside the
    final ckpt.pth; it holds the model after 2 steps (the last model of the same run stopped there), EMA included."""
    patched(monkeypatch)
    forget = ["--ckpt_folder", pretrained, "--mode", "rl", "--seed", "3"] + CPU
    kept = Path(main_forget.main(forget + ["--config", config_path, "--exp_root", str(workdir / "kept"),
                                           "--keep_snapshots"]))
    assert sorted(p.name for p in (kept / "ckpts").iterdir()) == ["ckpt.pth", "ckpt_2.pth"]
    two_steps = workdir / "two_steps.yml"
    two_steps.write_text(yaml.safe_dump({**TINY_CONFIG, "training": {**TINY_CONFIG["training"], "n_iters": 2}}))
    short = Path(main_forget.main(forget + ["--config", str(two_steps), "--exp_root", str(workdir / "short")]))
    assert [p.name for p in (short / "ckpts").iterdir()] == ["ckpt.pth"]  # without the flag: the last model only
    snapshot, stopped = torch.load(kept / "ckpts/ckpt_2.pth"), torch.load(short / "ckpts/ckpt.pth")
    assert snapshot["step"] == stopped["step"] == 1
    for part in ("model", "ema"):
        assert all(torch.equal(snapshot[part][k], stopped[part][k]) for k in stopped[part])
    last = torch.load(kept / "ckpts/ckpt.pth")["model"]
    assert any(not torch.equal(last[k], snapshot["model"][k]) for k in last)


def test_dual_flag_builds_two_optimizer_states():
    config = to_namespace(TINY_CONFIG)
    unet = build_unet(config.model, config.data)
    dual = build_unlearn_optimizer(config, unet, "dual_native", 5e-4)
    assert isinstance(dual, DualOptim) and dual.forget_optimizer is not dual.retain_optimizer
    assert dual.forget_optimizer.param_groups[0]["lr"] == 5e-4
    assert dual.retain_optimizer.param_groups[0]["lr"] == config.optim.lr
    shared = build_unlearn_optimizer(config, unet, "native", 5e-4)
    assert isinstance(shared, SharedOptim) and shared.forget_optimizer is shared.retain_optimizer


def test_sampling_classifier_and_fid(pretrained, workdir, config_path, monkeypatch, capsys):
    patched(monkeypatch)
    base = ["--ckpt_folder", pretrained, "--config", config_path, "--timesteps", "3"] + CPU
    out = Path(sample.main(base + ["--mode", "sample_classes", "--classes_to_generate", "0,2",
                                   "--n_samples_per_class", "5"]))
    assert sorted(p.name for p in (out / "0").iterdir()) == [f"{i}.png" for i in range(5)]
    assert len(list((out / "2").glob("*.png"))) == 5
    assert read_json(out / "run_sample_classes.json")["metrics"]["ema_weights"] is True
    fid_dir = Path(sample.main(base + ["--mode", "sample_fid", "--classes_to_generate", "x0",
                                       "--n_samples_per_class", "2", "--sample_type", "ddpm_noisy"]))
    assert fid_dir.name == "fid_samples_guidance_2.0_excluded_class_0"
    assert len(list(fid_dir.glob("*.png"))) == 2 * (N_CLASSES - 1)

    clf = train_classifier.main(["--n_epochs", "2", "--save_dir", str(workdir / "clf")] + CPU)
    assert Path(clf).name == "digits_small_cnn.pth"
    metrics = classifier_evaluation.main(["--sample_path", str(out / "0"), "--ckpt_path",
                                          str(workdir / "clf")] + CPU)
    assert metrics["n_samples"] == 5
    assert metrics["unlearning accuracy"] == pytest.approx(1 - metrics["accuracy of forgotten class"])
    assert read_json(out / "0" / "classifier_evaluation.json")["metrics"]["entropy"] == metrics["entropy"]
    # a folder with judges of two datasets: --dataset picks <dataset>_<arch>.pth, as the research code
    judges = workdir / "two_judges"
    judges.mkdir()
    for name in ("digits_small_cnn.pth", "cifar10_small_cnn.pth"):
        shutil.copy(clf, judges / name)
    judged = ["--sample_path", str(out / "0"), "--ckpt_path", str(judges)] + CPU
    assert classifier_evaluation.main(judged + ["--dataset", "digits"]) == metrics
    with pytest.raises(SystemExit):
        classifier_evaluation.main(judged)
    assert "expected exactly one <dataset>_<arch>.pth classifier, found 2" in capsys.readouterr().err

    for features in ("pixels", "classifier"):
        result = evaluator.main([str(fid_dir), "--ref_dataset", "digits", "--label_to_forget", "0", "--features",
                                 features, "--classifier_path", str(workdir / "clf"), "--kid_subset_size", "4"] + CPU)
        assert result["n_samples"] == 6 and result["n_reference"] == 6 * (N_CLASSES - 1)
        assert result["FID"] > 0
    assert "Inception Score" in result
    # a folder against itself: FID ~ 0
    same = evaluator.main([str(fid_dir), str(fid_dir), "--features", "pixels", "--kid_subset_size", "4"] + CPU)
    assert abs(same["FID"]) < 1e-3 and (same["Precision"], same["Recall"]) == (1.0, 1.0)
    # class_samples/<k>/ subfolders are pooled, the forgotten class's left out
    pooled = evaluator.main([str(out), "--ref_dataset", "digits", "--label_to_forget", "0", "--features", "pixels",
                             "--kid_subset_size", "4"] + CPU)
    assert pooled["n_samples"] == 5
    everything = evaluator.main([str(out), str(fid_dir), "--features", "pixels", "--kid_subset_size", "4"] + CPU)
    assert everything["n_samples"] == 10


def test_visualization_grid_rows_are_the_class_samples(pretrained, config_path, tmp_path):
    """``--mode visualization``: ``sample-<scale>.png`` holds one row per class, the same images (same seed,
    same batches) that ``--mode sample_classes`` writes one by one."""
    from PIL import Image

    run = tmp_path / "run"
    shutil.copytree(Path(pretrained) / "ckpts", run / "ckpts")
    base = ["--ckpt_folder", str(run), "--config", config_path, "--timesteps", "3"] + CPU
    grid_path = Path(sample.main(base + ["--mode", "visualization"]))
    assert grid_path == run / "sample-2.0.png"
    per_class = TINY_CONFIG["training"]["visualization_samples"] // N_CLASSES
    sample.main(base + ["--mode", "sample_classes", "--n_samples_per_class", str(per_class)])
    grid = np.asarray(Image.open(grid_path))
    assert grid.shape == (N_CLASSES * IMAGE_SIZE, per_class * IMAGE_SIZE)
    for label in range(N_CLASSES):
        for j in range(per_class):
            tile = grid[label * IMAGE_SIZE:(label + 1) * IMAGE_SIZE, j * IMAGE_SIZE:(j + 1) * IMAGE_SIZE]
            with Image.open(run / "class_samples" / str(label) / f"{label * per_class + j}.png") as img:
                assert np.array_equal(tile, np.asarray(img))


def test_selective_amnesia(pretrained, workdir, config_path, monkeypatch):
    patched(monkeypatch)
    sample.main(["--ckpt_folder", pretrained, "--config", config_path, "--timesteps", "2",
                 "--n_samples_per_class", "2"] + CPU)
    fim = ["--ckpt_folder", pretrained, "--mode", "sa_fim", "--fim_timesteps", "3"] + CPU
    generate_mask.main(fim + ["--n_chunks", "1"])
    one_backward = torch.load(Path(pretrained) / "fisher_dict.pt")
    # the research README's command: its cifar10_fim.yml is not read (the model's config applies), and
    # the timestep sum backpropagated in chunks gives the same per-sample gradients
    generate_mask.main(fim + ["--config", "cifar10_fim.yml", "--n_chunks", "2"])
    fisher = torch.load(Path(pretrained) / "fisher_dict.pt")
    assert all(torch.allclose(fisher[k], one_backward[k], rtol=1e-5, atol=1e-12) for k in fisher)
    assert all((v >= 0).all() for v in fisher.values()) and any(v.sum() > 0 for v in fisher.values())
    for extra in ([], ["--dual"]):
        run_dir = main_forget.main(["--ckpt_folder", pretrained, "--config", config_path, "--exp_root",
                                    str(workdir), "--mode", "sa"] + extra + CPU)
        assert Path(run_dir).parts[-3] == "sa"


def test_sa_remain_loss_adds_lambda_times_ewc(pretrained, config_path):
    from ImageGeneration.DDPM.training import ddpm_batches
    from ImageGeneration.DDPM.unlearn import ForgetSpec, plan_forgetting

    def plan(lmbda):
        loaded = load_checkpoint(pretrained, torch.device("cpu"))
        config = to_namespace(TINY_CONFIG)
        config.training.lmbda = lmbda
        unet = loaded.unet
        x = torch.rand(4, 1, IMAGE_SIZE, IMAGE_SIZE, generator=torch.Generator().manual_seed(0))
        batches = ddpm_batches(iter([(x, torch.tensor([1, 2, 3, 1]))]), torch.device("cpu"), flip=False)
        fisher = {"conv_in.bias": torch.ones_like(unet.conv_in.bias)}
        p = plan_forgetting(ForgetSpec("sa", 0), unet, config, None, batches, sa_fisher=fisher)
        with torch.no_grad():
            unet.conv_in.bias.add_(0.1)  # move away from the anchor
        torch.manual_seed(0)
        p.forget_loss(0)  # draws the step's batch that the remain term reads
        return p.remain_loss(0).item()

    n = load_checkpoint(pretrained, torch.device("cpu")).unet.conv_in.bias.numel()
    assert plan(10.0) - plan(0.0) == pytest.approx(10.0 * 0.01 * n, rel=1e-4)


def test_sa_step_is_the_originals_on_a_partial_replay_batch(pretrained):
    """Selective Amnesia's step against the research code's formula (``runners/diffusion.py:389-426``) on the
    same draws: a replay batch of 3 (a partial last batch; ``training.batch_size`` is 8), as many U[-1, 1]
    noise images labelled with the forgotten class (no label dropped to null), the replay's then the noise's
    Gaussian noise, ONE set of antithetic timesteps for both terms, and ``gamma`` x replay + ``lmbda`` x EWC."""
    from ImageGeneration.core.diffusion import antithetic_timesteps, q_sample
    from ImageGeneration.DDPM.config import alphas_cumprod
    from ImageGeneration.DDPM.networks import data_transform
    from ImageGeneration.DDPM.training import ddpm_batches
    from ImageGeneration.DDPM.unlearn import ForgetSpec, plan_forgetting

    config = to_namespace(TINY_CONFIG)
    unet = load_checkpoint(pretrained, torch.device("cpu")).unet
    x = torch.rand(3, 1, IMAGE_SIZE, IMAGE_SIZE, generator=torch.Generator().manual_seed(0))
    c = torch.tensor([1, 3, 1])
    batches = ddpm_batches(iter([(x, c)]), torch.device("cpu"), flip=False)
    fisher = {"conv_in.bias": torch.full_like(unet.conv_in.bias, 0.5)}
    plan = plan_forgetting(ForgetSpec("sa", 2), unet, config, None, batches, sa_fisher=fisher)
    anchor = unet.conv_in.bias.detach().clone()
    with torch.no_grad():
        unet.conv_in.bias.add_(0.1)  # move away from the anchor
    torch.manual_seed(0)
    noise_loss, replay_loss = plan.forget_loss(0), plan.remain_loss(0)

    # the research code's step, line by line, on the same seed
    torch.manual_seed(0)
    x_remember = data_transform(x)
    n = x_remember.size(0)
    x_forget = (torch.rand((n, 1, IMAGE_SIZE, IMAGE_SIZE)) - 0.5) * 2.0
    e_remember, e_forget = torch.randn_like(x_remember), torch.randn_like(x_forget)
    abar = alphas_cumprod(config)
    t = antithetic_timesteps(n, abar.shape[0], torch.device("cpu"))

    def simple(x0, labels, e):
        with torch.no_grad():
            return (e - unet(q_sample(x0, t, e, abar), t, labels).sample).square().sum(dim=(1, 2, 3)).mean()

    ewc = (fisher["conv_in.bias"] * (unet.conv_in.bias.detach() - anchor) ** 2).sum()
    training = config.training
    assert noise_loss.item() == pytest.approx(simple(x_forget, torch.full((n,), 2), e_forget).item(), rel=1e-6)
    assert replay_loss.item() == pytest.approx(
        (training.gamma * simple(x_remember, c, e_remember) + training.lmbda * ewc).item(), rel=1e-6)


@pytest.mark.parametrize("argv,message", [
    (["--mode", "sfron", "--label_to_forget", "7"], "--label_to_forget 7: expected a class in [0, 3]"),
    (["--mode", "bogus"], "--mode 'bogus': expected one of"),
    (["--mode", "sfron", "--unlearn_loss", "xx"], "--unlearn_loss: unknown value 'xx'"),
    (["--mode", "sfron", "--method", "xx"], "--method 'xx': expected one of ron, joint"),
    (["--dataset", "cifar10"], "--dataset cifar10: the checkpoint was trained on digits"),
])
def test_forget_usage_errors(pretrained, workdir, config_path, capsys, argv, message):
    before = sorted(p for p in workdir.rglob("*") if p.is_file())
    with pytest.raises(SystemExit) as exit_info:
        main_forget.main(["--ckpt_folder", pretrained, "--config", config_path, "--exp_root", str(workdir)]
                         + argv + CPU)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err
    assert sorted(p for p in workdir.rglob("*") if p.is_file()) == before


def test_mask_that_does_not_match_the_network(pretrained, workdir, config_path, tmp_path, capsys):
    torch.save({"conv_in.weight": torch.ones(3, 3)}, tmp_path / "bad.pt")
    with pytest.raises(SystemExit):
        main_forget.main(["--ckpt_folder", pretrained, "--config", config_path, "--exp_root", str(workdir),
                          "--mask_path", str(tmp_path / "bad.pt")] + CPU)
    assert f"--mask_path {tmp_path / 'bad.pt'}: key 'conv_in.weight' has shape (3, 3)" in capsys.readouterr().err


def test_checkpoint_folder_without_checkpoint(tmp_path, config_path, capsys):
    for script, extra in ((main_forget, []), (sample, []), (generate_mask, [])):
        with pytest.raises(SystemExit):
            script.main(["--ckpt_folder", str(tmp_path), "--config", config_path] + extra + CPU)
        assert "no checkpoint at ckpts/ckpt.pth" in capsys.readouterr().err


def test_script_runs_as_a_program_and_fails_with_one_line(tmp_path):
    import subprocess
    import sys

    script = Path(__file__).resolve().parents[2] / "ImageGeneration" / "DDPM" / "sample.py"
    result = subprocess.run([sys.executable, str(script), "--ckpt_folder", str(tmp_path / "nope"), "--device", "cpu"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    # exactly one line: this script imports diffusers, which imports bitsandbytes when installed, whose
    # CPU warning `common` silences
    assert result.stderr.strip().splitlines() == [f"error: --ckpt_folder {tmp_path / 'nope'}: folder not found"]


def write_imagefolder(root: Path, n_classes: int, size: int) -> Path:
    """``root/train/class<k>/<i>.png``: two flat RGB images per class (the CIFAR-10 zip's layout)."""
    from PIL import Image

    for label in range(n_classes):
        folder = root / "train" / f"class{label}"
        folder.mkdir(parents=True)
        for i in range(2):
            Image.new("RGB", (size, size), (60 * label, 0, 0)).save(folder / f"{i}.png")
    return root


def test_research_code_config_layout_loads_as_is(tmp_path, capsys):
    """A config with the research code's keys (``data.path``, ``dataset: CIFAR10``, ``model.type``,
    ``in_channels``, ``out_ch``, ``resamp_with_conv``; no ``network`` or ``norm_num_groups``) trains without
    --dataset: the dataset comes from the config and it builds the research code's network with its 32
    GroupNorm groups."""
    research = {
        "data": {"path": "/data", "dataset": "CIFAR10", "image_size": IMAGE_SIZE, "channels": 3,
                 "logit_transform": False, "uniform_dequantization": False, "gaussian_dequantization": False,
                 "random_flip": True, "rescaled": True, "num_workers": 0, "n_classes": N_CLASSES},
        "model": {"type": "simple", "in_channels": 3, "out_ch": 3, "ch": 32, "ch_mult": [1, 1], "num_res_blocks": 1,
                  "attn_resolutions": [4], "dropout": 0.1, "var_type": "fixedlarge", "ema_rate": 0.9999, "ema": True,
                  "resamp_with_conv": True, "cond_drop_prob": 0.1},
        "diffusion": TINY_CONFIG["diffusion"],
        "training": {"batch_size": 4, "n_iters": 1, "snapshot_freq": 1, "log_freq": 1, "visualization_samples": 4},
        "sampling": {"batch_size": 4, "last_only": True},
        "optim": {"weight_decay": 0.0, "optimizer": "Adam", "lr": 2e-4, "beta1": 0.9, "amsgrad": False, "eps": 1e-8,
                  "grad_clip": 1.0},
    }
    path = tmp_path / "cifar10_pretrain.yml"
    path.write_text(yaml.safe_dump(research))
    data = write_imagefolder(tmp_path / "cifar", N_CLASSES, IMAGE_SIZE)
    run_dir = Path(main_train.main(["--config", str(path), "--data_path", str(data), "--exp_root", str(tmp_path),
                                    "--mode", "pretrain"] + CPU))
    assert run_dir.parts[-3:-1] == ("cifar10", "pretrain")
    unet = load_checkpoint(run_dir, torch.device("cpu")).unet
    assert isinstance(unet, ConditionalModel) and unet.norm_out.num_groups == 32
    research["data"]["rescaled"] = False
    path.write_text(yaml.safe_dump(research))
    with pytest.raises(SystemExit):
        main_train.main(["--config", str(path), "--data_path", str(data), "--exp_root", str(tmp_path)] + CPU)
    assert "only data.rescaled: true (images in [-1, 1]) is supported" in capsys.readouterr().err


def test_real_digits_and_imagefolder_data(tmp_path, capsys):
    """The embedded digits and an ImageFolder tree (the CIFAR-10 layout) through common.datasets."""
    config = json.loads(json.dumps(TINY_CONFIG))
    config["training"]["n_iters"] = 1
    (tmp_path / "digits4.yml").write_text(yaml.safe_dump(config))
    with pytest.raises(SystemExit):  # digits has 10 classes
        main_train.main(["--config", str(tmp_path / "digits4.yml"), "--exp_root", str(tmp_path)] + CPU)
    assert "data.n_classes is 4 but --dataset digits has 10 classes" in capsys.readouterr().err
    config["data"]["n_classes"] = 10
    (tmp_path / "digits.yml").write_text(yaml.safe_dump(config))
    run_dir = main_train.main(["--config", str(tmp_path / "digits.yml"), "--exp_root", str(tmp_path)] + CPU)
    assert read_json(Path(run_dir) / "run.json")["metrics"]["trained_classes"] == list(range(10))
    config["data"]["n_classes"] = N_CLASSES

    write_imagefolder(tmp_path / "cifar", N_CLASSES, IMAGE_SIZE)
    config["data"]["channels"] = 3
    (tmp_path / "rgb.yml").write_text(yaml.safe_dump(config))
    run_dir = main_train.main(["--dataset", "cifar10", "--data_path", str(tmp_path / "cifar"), "--config",
                               str(tmp_path / "rgb.yml"), "--exp_root", str(tmp_path), "--mode", "retrain",
                               "--label_to_forget", "1"] + CPU)
    assert Path(run_dir).parts[-3:-1] == ("cifar10", "retrain")
    with pytest.raises(SystemExit):
        main_train.main(["--dataset", "cifar10", "--data_path", str(tmp_path / "cifar"), "--config",
                         str(tmp_path / "digits.yml"), "--exp_root", str(tmp_path)] + CPU)
    assert "the config expects 8x8x1" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main_train.main(["--dataset", "cifar10", "--config", str(tmp_path / "rgb.yml")] + CPU)
    assert "--data_path: required for --dataset cifar10" in capsys.readouterr().err


def test_save_base_dataset_writes_the_reference_folder(tmp_path, monkeypatch, capsys):
    """The research code's reference set: the first 500 training images of every class but the forgotten
    one (the synthetic set has fewer per class, so all of them), as PNGs that evaluator.py takes as ref_dir."""
    from PIL import Image

    from ig_fixtures import synthetic_arrays

    assert save_base_dataset.reference_subset(np.array([0, 1, 1, 2, 1, 0, 2]), 2, per_class=2).tolist() == \
        [0, 5, 1, 2]
    monkeypatch.setattr(save_base_dataset, "load_arrays", fake_load_arrays)
    out = Path(save_base_dataset.main(["--dataset", "digits", "--label_to_forget", "3",
                                       "--save_path", str(tmp_path)]))
    assert out == tmp_path / "digits_without_label_3"
    images, labels = synthetic_arrays(image_size=16)  # the digits config's 16x16
    pngs = sorted(out.glob("*.png"), key=lambda p: int(p.stem))
    assert [p.name for p in pngs] == [f"{i}.png" for i in range(int((labels != 3).sum()))]
    with Image.open(pngs[-1]) as img:
        assert img.mode == "L" and np.array_equal(np.asarray(img), images[labels != 3][-1, ..., 0])
    assert f"Saved {len(pngs)} images without label 3 to {out}" in capsys.readouterr().out
    same = evaluator.main([str(out), str(out), "--features", "pixels", "--kid_subset_size", "4"] + CPU)
    assert abs(same["FID"]) < 1e-3 and same["n_samples"] == len(pngs)


@pytest.mark.slow
def test_inception_features_from_a_local_state_dict(pretrained, workdir, config_path, tmp_path, monkeypatch):
    """FID/sFID/IS/precision/recall through torchvision Inception-v3 (random weights saved locally: nothing is
    downloaded)."""
    import torchvision

    patched(monkeypatch)
    weights = tmp_path / "inception.pth"
    torch.save(torchvision.models.inception_v3(weights=None, aux_logits=True, init_weights=False).state_dict(),
               weights)
    out = sample.main(["--ckpt_folder", pretrained, "--config", config_path, "--timesteps", "2", "--mode",
                       "sample_fid", "--n_samples_per_class", "2"] + CPU)
    result = evaluator.main([out, out, "--features", "inception", "--inception_weights", str(weights),
                             "--kid_subset_size", "4"] + CPU)
    assert abs(result["FID"]) < 1e-3 and result["Inception Score"] >= 1.0
    assert abs(result["sFID"]) < 1e-3 and (result["Precision"], result["Recall"]) == (1.0, 1.0)
