"""DiT scripts end to end on a tiny random DiT and VAE saved with ``save_pretrained`` (``tiny_dit`` fixture)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from diffusers import AutoencoderKL
from PIL import Image

from ImageGeneration.DiT import classifier_evaluation, generate_mask, main_forget, sample
from ImageGeneration.DiT.dit import load_latent_dit, load_vae
from ImageGeneration.DiT.unlearn import relabel_target

N_CLASSES = 3
CPU = ["--device", "cpu"]


def vae_args(tiny_dit: Path) -> list:
    """The tiny VAE by path (the scripts' default, sd-vae-ft-ema, is read from the Hugging Face cache)."""
    return ["--vae", str(tiny_dit / "ckpt" / "vae")]


def test_loading_through_the_same_code(tiny_dit):
    model = load_latent_dit(str(tiny_dit / "ckpt"), torch.device("cpu"), vae=str(tiny_dit / "ckpt"))
    assert (model.num_classes, model.null_label, model.image_size, model.latent_shape) == (3, 3, 16, (4, 8, 8))
    latents = model.encode(torch.zeros(2, 3, 16, 16))
    assert latents.shape == (2, 4, 8, 8)
    assert model.eps_fn(latents, torch.tensor([3, 900]), torch.tensor([0, 3])).shape == latents.shape


def test_relabel_target_differs_from_the_forget_class():
    assert relabel_target(207, 1000) == 307
    for n in (2, 3, 4, 5, 10, 1000):
        assert all(relabel_target(k, n) != k for k in range(n))


def test_dit_pipeline(tiny_dit, capsys):
    ckpt, data = str(tiny_dit / "ckpt"), str(tiny_dit / "data")
    mask_root = tiny_dit / "mask"
    # the research README's generate_fisher.py flags; here the class folders themselves as --data-path
    generate_mask.main(["--model", "DiT-XL/2", "--ckpt", ckpt, "--data-path", f"{data}/train", "--forget-class", "1",
                        "--mask-path", str(mask_root), "--n-iters", "2", "--batch-size", "2", "--num-workers", "0",
                        "--thresholds", "0.5", "1"] + vae_args(tiny_dit) + CPU)
    names = sorted(p.name for p in (mask_root / "1").glob("*.pt"))
    assert names == ["fisher_0.5.pt", "fisher_1.0.pt", "forget_fisher.pt", "remain_fisher.pt"]
    forget, remain = torch.load(mask_root / "1" / "forget_fisher.pt"), torch.load(mask_root / "1" / "remain_fisher.pt")
    # eval mode, as the research code: labels are never dropped, so the null class's embedding gets no gradient
    table = "transformer_blocks.0.norm1.emb.class_embedder.embedding_table.weight"
    assert forget[table][N_CLASSES].abs().sum() == 0 and remain[table][N_CLASSES].abs().sum() == 0
    assert forget[table][1].abs().sum() > 0
    for name, value in torch.load(mask_root / "1" / "fisher_1.0.pt").items():
        assert torch.equal(value, ((forget[name] + 1e-15) / (remain[name] + 1e-15) >= 1.0).float())
    # SalUn masks from the stored Fisher, without data
    generate_mask.main(["--method", "salun", "--forget-class", "1", "--mask-path", str(mask_root),
                        "--thresholds", "0.25"] + CPU)
    mask = torch.load(mask_root / "1" / "with_0.25.pt")
    total = sum(v.numel() for v in mask.values())
    assert sum(int(v.sum()) for v in mask.values()) == int(total * 0.25)

    results = tiny_dit / "results"
    runs = {}
    for extra in ([], ["--dual", "--forget_lr", "1e-3", "--unlearn-loss", "rl", "--no-vb-loss"]):
        out = main_forget.main(["--ckpt", ckpt, "--data-path", data, "--results-dir", str(results), "--n-iters", "2",
                                "--batch-size", "2", "--num-workers", "0", "--ckpt-every", "1",
                                "--snapshot-every", "2" if extra else "5",
                                "--forget-class", "1", "--method", "ron", "--unlearn-loss", "ga",
                                "--forget-alpha", "1", "--decay-forget-alpha", "--lr", "1e-3",
                                "--mask-path", str(mask_root / "1" / "with_0.25.pt")]
                               + extra + vae_args(tiny_dit) + CPU)
        runs[bool(extra)] = Path(out)
    assert runs[False].name.startswith("000-DiT-XL-2-forget-1-ron-ga-lr0.001-f1.0-r1.0")
    assert runs[True].name.startswith("001-") and runs[True].name.endswith("-dual")
    record = json.loads((runs[True] / "run.json").read_text())
    assert record["metrics"]["optimizer"].startswith("DualOptim")
    # the tiny DiT predicts variances (8 = 2 x 4 channels), so its loss adds the bound unless told not to
    assert not record["metrics"]["vb_loss"]
    assert json.loads((runs[False] / "run.json").read_text())["metrics"]["vb_loss"]
    assert sorted(p.name for p in (runs[True] / "checkpoints").iterdir()) == ["0000001", "0000002",
                                                                             "0000002_sample.png"]
    with Image.open(runs[True] / "checkpoints" / "0000002_sample.png") as grid:  # 10 classes, 5 a row
        assert grid.size == (5 * 16, 2 * 16)
    assert sorted(p.name for p in (runs[False] / "checkpoints").iterdir()) == ["0000001", "0000002"]
    transformer_path = runs[True] / "checkpoints" / "0000002" / "transformer"

    # with the rl loss both steps are masked: 75% of the weights never move
    before = load_latent_dit(ckpt, torch.device("cpu"), vae=ckpt).transformer.state_dict()
    after = load_latent_dit(ckpt, torch.device("cpu"), str(transformer_path), ckpt).transformer.state_dict()
    for name, m in mask.items():
        assert torch.equal(after[name][m == 0], before[name][m == 0]), name
    assert any(not torch.equal(after[n], before[n]) for n in mask)

    sample_dir = tiny_dit / "samples"
    sample.main(["--ckpt", ckpt, "--transformer-path", str(transformer_path), "--class-labels", "1", "2",
                 "--n-samples-per-class", "3", "--batch-size", "2", "--num-sampling-steps", "3",
                 "--sample-dir", str(sample_dir)] + vae_args(tiny_dit) + CPU)
    assert sorted(p.name for p in (sample_dir / "1").glob("*.png")) == ["0.png", "1.png", "2.png"]
    with Image.open(sample_dir / "2" / "5.png") as img:
        assert img.size == (16, 16) and img.mode == "RGB"

    weights = tiny_dit / "resnet18.pth"
    torch.save(torchvision.models.resnet18(num_classes=N_CLASSES).state_dict(), weights)
    metrics = classifier_evaluation.main(["--sample_path", str(sample_dir / "1"), "--label_of_forgotten_class", "1",
                                          "--arch",
                                          "resnet18", "--classifier-weights", str(weights), "--num-classes", "3",
                                          "--image-size", "32"] + CPU)
    assert metrics["n_samples"] == 3
    assert 0.0 <= metrics["prob of forgotten class"] <= 1.0
    assert metrics["entropy"] <= np.log(N_CLASSES) + 1e-9


@pytest.mark.parametrize("argv,message", [
    (["--forget-class", "5"], "--forget-class 5: expected a class in [0, 2]"),
    (["--forget-class", "0", "--unlearn-loss", "xx"], "--unlearn-loss 'xx': expected one of ga, rl, adaga"),
    (["--forget-class", "0", "--method", "xx"], "--method 'xx': expected one of ron, joint"),
])
def test_dit_forget_errors(tiny_dit, capsys, argv, message):
    results = tiny_dit / "bad_results"
    with pytest.raises(SystemExit) as exit_info:
        main_forget.main(["--ckpt", str(tiny_dit / "ckpt"), "--data-path", str(tiny_dit / "data"),
                          "--results-dir", str(results), "--num-workers", "0"] + argv + vae_args(tiny_dit) + CPU)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
    assert not results.exists() or not any(results.iterdir())


def test_vae_names_of_the_research_code(monkeypatch):
    """``--vae ema|mse`` (default ema) load stabilityai/sd-vae-ft-<name> (the VAE at the repository root) from
    the Hugging Face cache only; other values are hub ids or folders holding vae/."""
    calls = []
    monkeypatch.setattr(AutoencoderKL, "from_pretrained", lambda source, **kwargs: calls.append((source, kwargs)))
    load_vae()
    load_vae("mse", "--vae")
    load_vae("facebook/DiT-XL-2-256")
    assert calls == [("stabilityai/sd-vae-ft-ema", {"local_files_only": True}),
                     ("stabilityai/sd-vae-ft-mse", {"local_files_only": True}),
                     ("facebook/DiT-XL-2-256", {"subfolder": "vae"})]
    assert sample.parse_args(["--class-labels", "0"]).vae == "ema"


def test_a_vae_missing_from_the_cache_is_one_line_saying_how_to_supply_it(tiny_dit, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty_cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(SystemExit) as exit_info:
        sample.main(["--ckpt", str(tiny_dit / "ckpt"), "--class-labels", "0", "--sample-dir", str(tmp_path / "s")]
                    + CPU)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert ("error: --vae ema: stabilityai/sd-vae-ft-ema is not in the Hugging Face cache; download it once "
            "(hf download stabilityai/sd-vae-ft-ema) or give --vae <folder> holding the AutoencoderKL") in err
    assert not (tmp_path / "s").exists()


def test_dit_missing_checkpoint_and_bad_mask(tiny_dit, tmp_path, capsys):
    with pytest.raises(SystemExit):
        sample.main(["--ckpt", str(tmp_path), "--class-labels", "0"] + CPU)
    assert "no 'transformer/' folder" in capsys.readouterr().err
    torch.save({"proj_out_2.weight": torch.ones(1)}, tmp_path / "bad.pt")
    with pytest.raises(SystemExit):
        main_forget.main(["--ckpt", str(tiny_dit / "ckpt"), "--data-path", str(tiny_dit / "data"),
                          "--results-dir", str(tmp_path / "r"), "--forget-class", "0", "--mask-path",
                          str(tmp_path / "bad.pt")] + vae_args(tiny_dit) + CPU)
    assert f"--mask-path {tmp_path / 'bad.pt'}: key 'proj_out_2.weight' has shape (1,)" in capsys.readouterr().err


@pytest.mark.slow
def test_forgetting_resumes_bitwise_after_sigkill(tiny_dit, tmp_path, killed_run, one_thread):
    argv = ["--ckpt", str(tiny_dit / "ckpt"), "--data-path", str(tiny_dit / "data"), "--n-iters", "4",
            "--batch-size", "2", "--num-workers", "0", "--ckpt-every", "2", "--forget-class", "1",
            "--dual", "--forget_lr", "1e-3", "--lr", "1e-3"] + vae_args(tiny_dit) + CPU
    straight = Path(main_forget.main(argv + ["--results-dir", str(tmp_path / "straight")]))
    killed_run("ImageGeneration.DiT.main_forget", argv + ["--results-dir", tmp_path / "interrupted"], kill_at=3)
    resumed = Path(main_forget.main(argv + ["--results-dir", str(tmp_path / "interrupted"), "--resume"]))
    assert resumed.name == straight.name and not (resumed / "resume_state.pt").exists()
    weights = [load_latent_dit(str(tiny_dit / "ckpt"), torch.device("cpu"),
                               str(run / "checkpoints" / "0000004" / "transformer"),
                               str(tiny_dit / "ckpt")).transformer.state_dict()
               for run in (straight, resumed)]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    losses = [json.loads((run / "run.json").read_text())["metrics"]["final_forget_loss"] for run in (straight, resumed)]
    assert losses[0] == losses[1]


def test_dit_scripts_turn_tf32_on_on_cuda_only(monkeypatch):
    """As the DiT research code (``forget.py:8-9``, ``generate_fisher.py:4-5``, ``sample.py:12-13``): TF32 for
    CUDA runs of forgetting, Fisher/mask generation and sampling; a CPU run leaves PyTorch's flags alone."""
    from argparse import Namespace
    from common.errors import UsageError
    from ImageGeneration.core import runs

    assert runs.tf32_on(torch.device("cuda")) and runs.tf32_on(torch.device("cuda:1"))
    assert not runs.tf32_on(torch.device("cpu"))
    flags = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    try:  # process-wide flags (monkeypatch cannot restore the cuBLAS one)
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
        args = Namespace(device="cpu", gpu=None, seed=0, deterministic=False)
        runs.start_run(args, tf32=True)
        assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
        monkeypatch.setattr(runs, "tf32_on", lambda device: True)  # as on a GPU
        runs.start_run(args)
        assert not torch.backends.cuda.matmul.allow_tf32  # the DDPM scripts' call: PyTorch's defaults
        runs.start_run(args, tf32=True)
        assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = flags

    asked = []

    def stop(args, tf32=False):
        asked.append(tf32)
        raise UsageError("stop")

    for script, argv in ((main_forget, ["--ckpt", "x", "--data-path", "x", "--forget-class", "1"]),
                         (sample, ["--ckpt", "x", "--class-labels", "1"]),
                         (generate_mask, ["--ckpt", "x", "--data-path", "x", "--forget-class", "1"])):
        monkeypatch.setattr(script, "start_run", stop)
        with pytest.raises(SystemExit):
            script.main(argv + CPU)
    assert asked == [True, True, True]
