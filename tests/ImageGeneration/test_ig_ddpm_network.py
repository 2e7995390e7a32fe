"""The research code's DDPM network (``model.network: conditional_model``) and its checkpoints.

The reference numbers were computed once with the research code's ``models/diffusion.py``
(``Conditional_Model``) on the same weights and inputs, outside the test suite: the tests build
the research-format checkpoint themselves, from this toolkit's network.
"""
from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
import yaml

from common.errors import UsageError
from ImageGeneration.core.diffusion import guided_noise
from ImageGeneration.DDPM import generate_mask, main_forget, sample
from ImageGeneration.DDPM.checkpoints import CKPT_RELPATH, load_checkpoint
from ImageGeneration.DDPM.config import to_namespace
from ImageGeneration.DDPM.networks import build_unet, noise_predictor, null_label
from ImageGeneration.DDPM.network import ConditionalModel

from ig_fixtures import N_CLASSES, TINY_CONFIG, fake_load_arrays

CPU = ["--device", "cpu"]

#: The smallest network the research code builds: its ResnetBlock's class-embedding width is fixed at
#: 512 (``models/diffusion.py``: ``cemb_channels=512`` is never passed), which only fits ``ch = 128``.
RESEARCH_SIZED = {
    "data": {"dataset": "cifar10", "image_size": 8, "channels": 3, "n_classes": 3},
    "model": {"network": "conditional_model", "ch": 128, "ch_mult": [1, 2], "num_res_blocks": 1,
              "attn_resolutions": [4], "dropout": 0.1, "norm_num_groups": 32, "resamp_with_conv": True},
}
#: ``torch.manual_seed(0); Conditional_Model(config)``: sums of some of its initial weights.
RESEARCH_INIT_SUMS = {"null_classes_emb": -5.003857, "classes_emb.weight": -14.02888,
                      "conv_out.weight": 1.227685, "up.0.block.1.temb_cemb_proj.weight": 4.380286}
#: The research network with the weights of :func:`fill`, on the inputs of :func:`inputs`:
#: ``cond_drop_prob=0`` (``cond``), ``=1`` (``null``) and ``mode="test", cond_scale=2`` (``guided``).
#: Sums and absolute sums of the outputs, and four values ``out[b, channel, row, col:col + 4]``.
RESEARCH_SUMS = {"cond": (129.17920903296908, 148.28873090905836), "null": (129.54291817476042, 148.5579339277465)}
RESEARCH_VALUES = {"cond": ((0, 0, 0, 0), [0.05354814, 0.17702971, -0.02459299, -0.03428423]),
                   "null": ((3, 2, 7, 4), [0.31191838, 0.28881070, 0.12314405, 0.26659930]),
                   "guided": ((2, 1, 3, 0), [0.01136991, 0.25963032, 0.34025592, 0.19581783])}


def research_sized():
    config = to_namespace(copy.deepcopy(RESEARCH_SIZED))
    return config, build_unet(config.model, config.data)


def fill(net: torch.nn.Module) -> None:
    """Every weight from one generator, in sorted-name order (as the reference run filled the research net)."""
    generator = torch.Generator().manual_seed(0)
    state = net.state_dict()
    with torch.no_grad():
        for name in sorted(state):
            state[name].copy_(torch.randn(state[name].shape, generator=generator) * 0.1)


def inputs():
    x = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    return x, torch.tensor([0, 10, 500, 999]), torch.tensor([0, 1, 2, 1])


def to_research_format(state: dict) -> dict:
    """This toolkit's names -> the research code's (the same names) under ``nn.DataParallel``'s ``module.``."""
    return {f"module.{name}": value.clone() for name, value in state.items()}


def save_research_checkpoint(folder: Path, net: torch.nn.Module, ema_shift: float = 0.01, with_ema: bool = True):
    """``[model, optimizer, step(, ema)]`` as the research code's ``runners/diffusion.py`` saves it; its EMA
    helper's shadow weights are named without ``module.``."""
    states = [to_research_format(net.state_dict()), {"state": {}, "param_groups": []}, 12345]
    if with_ema:
        states.append({name: p.detach() + ema_shift for name, p in net.named_parameters()})
    (folder / CKPT_RELPATH).parent.mkdir(parents=True, exist_ok=True)
    torch.save(states, folder / CKPT_RELPATH)
    return folder


def test_seeded_initialisation_is_the_research_codes():
    torch.manual_seed(0)
    _, net = research_sized()
    state = net.state_dict()
    for name, expected in RESEARCH_INIT_SUMS.items():
        assert float(state[name].double().sum()) == pytest.approx(expected, abs=1e-5), name


def test_research_checkpoint_loads_with_identical_outputs(tmp_path):
    config, net = research_sized()
    fill(net)
    folder = save_research_checkpoint(tmp_path, net)
    loaded = load_checkpoint(folder, torch.device("cpu"), research_config=lambda: config)
    assert loaded.source_format == "research" and loaded.state["step"] == 12345
    assert loaded.trained_classes == [0, 1, 2]
    unet = loaded.unet.eval()
    assert isinstance(unet, ConditionalModel) and null_label(unet) == 3
    x, t, c = inputs()
    eps = noise_predictor(unet)
    with torch.no_grad():
        outputs = {"cond": eps(x, t, c), "null": eps(x, t, torch.full_like(c, 3)),
                   "guided": guided_noise(eps, x, t, c, torch.full_like(c, 3), 2.0)}
    for name, (total, abs_total) in RESEARCH_SUMS.items():
        assert float(outputs[name].double().sum()) == pytest.approx(total, abs=1e-4), name
        assert float(outputs[name].double().abs().sum()) == pytest.approx(abs_total, abs=1e-4), name
    for name, ((b, channel, row, col), expected) in RESEARCH_VALUES.items():
        got = outputs[name][b, channel, row, col:col + 4]
        assert torch.allclose(got, torch.tensor(expected), atol=1e-6, rtol=0), (name, got)
    # the EMA entry is the research EMA helper's shadow: the weights + 0.01 here
    assert loaded.use_ema_weights()
    for name, p in unet.named_parameters():
        assert torch.equal(p, loaded.state["model"][name] + 0.01), name


def test_research_checkpoint_without_ema_and_bare_state_dict(tmp_path):
    config, net = research_sized()
    loaded = load_checkpoint(save_research_checkpoint(tmp_path / "a", net, with_ema=False), torch.device("cpu"),
                             research_config=lambda: config)
    assert loaded.state["ema"] is None and not loaded.use_ema_weights()
    bare = tmp_path / "b" / CKPT_RELPATH
    bare.parent.mkdir(parents=True)
    torch.save(to_research_format(net.state_dict()), bare)
    loaded = load_checkpoint(tmp_path / "b", torch.device("cpu"), research_config=lambda: config)
    for name, value in net.state_dict().items():
        assert torch.equal(loaded.unet.state_dict()[name], value), name


@pytest.mark.parametrize("corrupt,message", [
    (lambda s: s[0].pop("module.null_classes_emb"), "weights do not fit the network of --config "
                                                    "(model.network conditional_model) (Error(s) in loading"),
    (lambda s: s[0].update({"module.conv_out.bias": torch.zeros(5)}), "size mismatch for conv_out.bias"),
    (lambda s: s[3].pop("conv_out.bias"), "the EMA weights (entry 3) do not fit the network of --config"),
    (lambda s: s.pop(2), "a list checkpoint must be the research code's [model, optimizer, step]"),
])
def test_research_checkpoint_that_does_not_fit_is_refused(tmp_path, corrupt, message):
    config, net = research_sized()
    folder = save_research_checkpoint(tmp_path, net)
    states = torch.load(folder / CKPT_RELPATH)
    corrupt(states)
    torch.save(states, folder / CKPT_RELPATH)
    with pytest.raises(UsageError) as err:
        load_checkpoint(folder, torch.device("cpu"), research_config=lambda: config)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_unet2d_config_does_not_load_a_research_checkpoint(tmp_path):
    config, net = research_sized()
    folder = save_research_checkpoint(tmp_path, net)
    config.model.network = "unet2d"
    with pytest.raises(UsageError, match=r"weights do not fit the network of --config \(model.network unet2d\)"):
        load_checkpoint(folder, torch.device("cpu"), research_config=lambda: config)


@pytest.fixture
def tiny_research_run(tmp_path, monkeypatch):
    """A research-format checkpoint of a tiny research network and the config that describes it."""
    for module in (generate_mask, main_forget):
        monkeypatch.setattr(module, "load_arrays", fake_load_arrays)
    tree = copy.deepcopy(TINY_CONFIG)
    tree["model"]["network"] = "conditional_model"
    config_path = tmp_path / "tiny_research.yml"
    config_path.write_text(yaml.safe_dump(tree))
    config = to_namespace(tree)
    torch.manual_seed(0)
    return save_research_checkpoint(tmp_path / "ckpt", build_unet(config.model, config.data)), str(config_path)


def test_masks_forgetting_and_sampling_from_a_research_checkpoint(tiny_research_run, tmp_path):
    """The research code's commands on its own checkpoint: masks over its parameters (the null vector and
    the joint time/class projections included), SFR-on forgetting (the ``rl`` loss masks both steps), then
    sampling the forgotten model."""
    folder, config_path = tiny_research_run
    common = ["--ckpt_folder", str(folder), "--config", config_path, "--label_to_forget", "1"] + CPU
    mask_dir = Path(generate_mask.main(common + ["--mode", "generate_fisher", "--threshold", "1.0"]))
    loaded = load_checkpoint(folder, torch.device("cpu"),
                             research_config=lambda: to_namespace(yaml.safe_load(Path(config_path).read_text())))
    names = {name for name, _ in loaded.unet.named_parameters()}
    assert {"null_classes_emb", "cemb.dense.1.weight", "up.0.block.1.temb_cemb_proj.weight"} <= names
    for file in ("forget_fisher.pt", "remain_fisher.pt", "fisher_1.0.pt"):
        assert set(torch.load(mask_dir / file)) == names, file
    # the research code names its masks on its nn.DataParallel model
    torch.save(to_research_format(torch.load(mask_dir / "fisher_1.0.pt")), tmp_path / "mask.pt")
    run_dir = Path(main_forget.main(common + ["--exp_root", str(tmp_path), "--mode", "sfron", "--unlearn_loss", "rl",
                                              "--mask_path", str(tmp_path / "mask.pt")]))
    state = torch.load(run_dir / CKPT_RELPATH)
    assert state["config"]["model"]["network"] == "conditional_model"
    assert state["trained_classes"] == list(range(N_CLASSES))
    mask = torch.load(mask_dir / "fisher_1.0.pt")
    before = loaded.state["model"]
    assert any(not torch.equal(v, before[n]) for n, v in state["model"].items())
    for name, m in mask.items():  # only masked-in weights move
        assert torch.equal(state["model"][name][m == 0], before[name][m == 0]), name
    # the research EMA entry seeded the forgetting run's EMA
    assert set(state["ema"]) == names
    out = Path(sample.main(["--ckpt_folder", str(run_dir), "--config", config_path, "--timesteps", "2",
                            "--mode", "sample_classes", "--classes_to_generate", "0", "--n_samples_per_class", "2"]
                           + CPU))
    assert sorted(p.name for p in (out / "0").iterdir()) == ["0.png", "1.png"]
    record = json.loads((out / "run_sample_classes.json").read_text())["metrics"]
    assert record["checkpoint_format"] == "toolkit" and record["ema_weights"] is True
    # the research checkpoint itself, with its EMA entry
    out = Path(sample.main(common[:4] + ["--timesteps", "2", "--mode", "visualization"] + CPU))
    record = json.loads((folder / "run_visualization.json").read_text())["metrics"]
    assert record["checkpoint_format"] == "research" and record["ema_weights"] is True
    assert out == folder / "sample-2.0.png" and out.is_file()


def test_checkpoint_written_before_the_network_choice_is_unet2d(tmp_path):
    """A checkpoint of this toolkit whose stored config predates ``model.network`` holds a UNet2DModel."""
    tree = copy.deepcopy(TINY_CONFIG)
    config = to_namespace(tree)
    unet = build_unet(config.model, config.data)
    for key in ("network", "resamp_with_conv"):
        del tree["model"][key]
    (tmp_path / CKPT_RELPATH).parent.mkdir(parents=True)
    torch.save({"model": unet.state_dict(), "ema": None, "optimizer": None, "step": 0, "config": tree,
                "trained_classes": [0]}, tmp_path / CKPT_RELPATH)
    loaded = load_checkpoint(tmp_path, torch.device("cpu"))
    assert loaded.config.model.network == "unet2d" and loaded.source_format == "toolkit"
    for name, value in unet.state_dict().items():
        assert torch.equal(loaded.unet.state_dict()[name], value), name


def test_research_checkpoint_needs_a_config(tiny_research_run, capsys):
    folder, _ = tiny_research_run
    with pytest.raises(SystemExit) as exit_info:
        sample.main(["--ckpt_folder", str(folder), "--mode", "sample_classes"] + CPU)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"error: --ckpt_folder {folder}: a research-code checkpoint carries no config; give --config "
                   "(the YAML it was trained with) or --dataset")


def test_config_values_get_their_types_and_ranges(tmp_path):
    """``lr: 1e-3`` (a string to YAML) becomes a float; a mistyped key is one line naming the file and key."""
    from common.errors import UsageError
    from ImageGeneration.DDPM.config import default_config_path, load_config

    text = default_config_path("digits", "pretrain").read_text()
    config = tmp_path / "c.yml"
    config.write_text(text.replace("  lr: 0.001", "  lr: 1e-3"))
    assert load_config(config, None, "pretrain").optim.lr == 0.001
    config.write_text(text.replace("  ema: true", "  ema: yes please"))
    with pytest.raises(UsageError, match=r"^--config \S+c.yml: model.ema: expected true or false, got 'yes please'$"):
        load_config(config, None, "pretrain")
    config.write_text(text.replace("  ch_mult: [1, 2]", "  ch_mult: [1, 0]"))
    with pytest.raises(UsageError, match=r"model.ch_mult: expected an integer >= 1, got 0$"):
        load_config(config, None, "pretrain")
