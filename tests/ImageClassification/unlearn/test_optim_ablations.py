"""The paper's optimizer ablations (--optim dual_sa ... dual_aa_8bit) through SFR-on, and where they are refused.

Their updates are checked step for step in tests/common/test_optim_recipes.py; here SFR-on runs
each one: its steps, the cosine schedule on every torch optimizer, the state each side keeps.
"""
import pytest
import torch

from common.errors import UsageError
from ImageClassification.arg_parser import parse_config
from ImageClassification.unlearn import get_unlearn_method

CPU = torch.device("cpu")
ABLATIONS = ["dual_sa", "dual_ss", "dual_ls", "dual_ll", "dual_sl", "dual_share", "dual_aa_m", "dual_aa_v",
             "dual_aa_8bit"]


@pytest.mark.parametrize("optim", ABLATIONS)
def test_sfron_runs_every_ablation(optim, model, loaders, make_args, recorder):
    if optim == "dual_aa_8bit":
        pytest.importorskip("bitsandbytes")
    before = [p.detach().clone() for p in model.parameters()]
    args = make_args(unlearn="SFRon", optim=optim, unlearn_lr=1e-3, retain_lr=0.01, sfron_iters=6, sfron_freq=3)
    get_unlearn_method("SFRon")(loaders, model, args, None, CPU)
    assert recorder.steps == ["forget", "retain", "retain", "retain"] * 2
    (optimizer,) = recorder.optimizers
    assert optimizer.is_dual
    for torch_optimizer in optimizer.optimizers:  # CosineAnnealingLR(T_max=--sfron_iters) on each
        assert torch_optimizer.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)
    moved = [not torch.equal(a, b) for a, b in zip(before, model.parameters())]
    assert all(moved) and all(torch.isfinite(p).all() for p in model.parameters())


def test_ablations_keep_one_state_per_objective_through_sfron(model, loaders, make_args, recorder):
    args = make_args(unlearn="SFRon", optim="dual_ll", unlearn_lr=1e-3, retain_lr=0.01, sfron_iters=6, sfron_freq=3)
    get_unlearn_method("SFRon")(loaders, model, args, None, CPU)
    (optimizer,) = recorder.optimizers
    weight = next(model.parameters())
    forget_m = optimizer.forget_optimizer.state[weight]["exp_avg"]
    retain_m = optimizer.retain_optimizer.state[weight]["exp_avg"]
    assert forget_m is not retain_m and not torch.equal(forget_m, retain_m)


@pytest.mark.parametrize("optim", ["dual_ll", "dual_share"])
def test_other_methods_refuse_the_ablations_in_one_line(optim):
    with pytest.raises(UsageError, match=rf"^--optim {optim}: this optimizer ablation runs with --unlearn SFRon"):
        parse_config(["--unlearn", "RL", "--optim", optim])
    assert parse_config(["--unlearn", "SFRon", "--optim", optim]).optim == optim


def test_retain_lr_defaults_to_unlearn_lr():
    assert parse_config(["--unlearn_lr", "0.03"]).retain_lr == 0.03
    assert parse_config(["--unlearn_lr", "0.03", "--retain_lr", "0.01"]).retain_lr == 0.01
