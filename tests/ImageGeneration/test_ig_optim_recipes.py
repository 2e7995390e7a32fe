"""Image generation's ``--optim``: every recipe the DDPM and the DiT accept, step for step against the torch
optimizers it names, built by hand with each model's hyperparameters."""
from __future__ import annotations

import copy
import dataclasses

import pytest
import torch

from common.errors import UsageError
from dualoptim.optim import Lion
from dualoptim.recipes import GENERATION_FLAG, IMAGE_FLAG, recipe_names
from ImageGeneration.core.optim import forget_recipe
from ImageGeneration.DDPM.config import to_namespace
from ImageGeneration.DDPM.optimizers import build_unlearn_optimizer
from ImageGeneration.DiT.unlearn import dit_optimizer

from ig_fixtures import TINY_CONFIG

FORGET_LR, LR, WD = 5e-4, 1e-3, 1e-2
#: Recipes that are no pair of torch optimizers, or need an optional package; tests/common/test_optim_recipes.py
#: covers them.
NOT_A_TORCH_PAIR = {"dual_share", "dual_aa_m", "dual_aa_v", "dual_aa_8bit", "dual_prodigy", "dual_sf"}


def ddpm_config():
    """The tiny DDPM config with a weight decay, so that L2 (Adam, SGD) and decoupled (AdamW) decay differ."""
    config = copy.deepcopy(TINY_CONFIG)
    config["optim"].update(lr=LR, weight_decay=WD, beta1=0.8, eps=1e-6)
    return to_namespace(config)


def adam(p, lr):  # the config's Adam (L2 weight decay, beta1, eps)
    return torch.optim.Adam(p, lr=lr, weight_decay=WD, betas=(0.8, 0.999), eps=1e-6, amsgrad=False)


def adamw(p, lr, betas=(0.9, 0.999)):  # the image-classification recipes' AdamW
    return torch.optim.AdamW(p, lr=lr, weight_decay=0.05, betas=betas)


def sgd(wd):
    return lambda p, lr: torch.optim.SGD(p, lr=lr, momentum=0.9, weight_decay=wd)


def lion(p, lr):
    return Lion(p, lr=lr, weight_decay=1e-2)


def ddpm_adamw(p, lr):  # the IC AdamW with the config's beta1 (its adam_betas)
    return adamw(p, lr, betas=(0.8, 0.999))


def pairs(native_forget, native_retain, shared_adamw, wd):
    """recipe -> (forget optimizer, retain optimizer or None for one shared optimizer), as ``f(params, lr)``."""
    return {"native": (native_retain, None), "dual_native": (native_forget, native_retain),
            "sgd": (sgd(wd), None), "adam": (shared_adamw, None),
            "dual": (adamw, sgd(wd)), "dual_as": (adamw, sgd(wd)), "dual_aa": (adamw, adamw),
            "dual_sa": (sgd(wd), adamw), "dual_ss": (sgd(wd), sgd(wd)), "dual_ls": (lion, sgd(wd)),
            "dual_ll": (lion, lion), "dual_sl": (sgd(wd), lion)}


def dit_adamw(p, lr):
    return torch.optim.AdamW(p, lr=lr, weight_decay=0.0)


MODELS = {
    "DDPM": (lambda model, recipe: build_unlearn_optimizer(ddpm_config(), model, recipe, FORGET_LR),
             pairs(adam, adam, ddpm_adamw, WD)),
    "DiT": (lambda model, recipe: dit_optimizer(model, LR, recipe, FORGET_LR), pairs(dit_adamw, dit_adamw, adamw, 0.0)),
}


def test_every_recipe_is_covered_and_image_classification_recipes_reach_generation():
    for _, table in MODELS.values():
        assert set(table) | NOT_A_TORCH_PAIR == set(recipe_names(GENERATION_FLAG))
    assert set(recipe_names(IMAGE_FLAG)) == set(recipe_names(GENERATION_FLAG)) - {"native", "dual_native"}


@pytest.mark.parametrize("modality", sorted(MODELS))
@pytest.mark.parametrize("recipe", sorted(MODELS["DDPM"][1]))
def test_updates_equal_the_torch_optimizers_named(modality, recipe):
    """Alternating forget and retain steps on fixed gradients move the weights exactly as the named torch
    optimizers do: a dual recipe's forget optimizer at ``--forget_lr`` sees only the forget steps, its retain
    optimizer at the model's lr only the retain steps; a one-state recipe's single optimizer sees both at the lr."""
    build, table = MODELS[modality]
    forget_ref, retain_ref = table[recipe]
    torch.manual_seed(0)
    model, reference = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    reference.load_state_dict(model.state_dict())
    optimizer = build(model, recipe)
    assert optimizer.is_dual == (retain_ref is not None)
    if retain_ref is None:
        ref_forget = ref_retain = forget_ref(reference.parameters(), LR)
    else:
        ref_forget, ref_retain = forget_ref(reference.parameters(), FORGET_LR), retain_ref(reference.parameters(), LR)
    generator = torch.Generator().manual_seed(1)
    for _ in range(4):
        for step, ref_step in ((optimizer.forget_step, ref_forget.step), (optimizer.retain_step, ref_retain.step)):
            grads = [torch.randn(p.shape, generator=generator) for p in model.parameters()]
            for net in (model, reference):
                for p, g in zip(net.parameters(), grads):
                    p.grad = g.clone()
            step()
            ref_step()
    for p, q in zip(model.parameters(), reference.parameters()):
        assert torch.equal(p, q), recipe


def test_dual_is_dual_native_and_other_recipes_do_not_mix_with_it():
    assert (forget_recipe(None, False), forget_recipe(None, True)) == ("native", "dual_native")
    assert forget_recipe("dual_native", True) == "dual_native" and forget_recipe("dual_sa", False) == "dual_sa"
    with pytest.raises(UsageError, match="--dual: means --optim dual_native; it does not go with --optim dual_sa"):
        forget_recipe("dual_sa", True)
    with pytest.raises(UsageError, match=r"^--optim: unknown value 'bogus'; expected one of .*dual_native"):
        forget_recipe("bogus", False)


def test_a_recipe_registered_once_reaches_all_three_modalities(monkeypatch):
    """One registration for ``--optim`` and ``--optim_cfg`` serves image classification, image generation
    (both models) and the LLM."""
    from dualoptim.recipes import LLM_FLAG, OPTIM_RECIPES, recipe

    monkeypatch.setattr(OPTIM_RECIPES, "_entries", dict(OPTIM_RECIPES._entries))
    built = []

    def toy(params, settings):
        built.append(settings)
        return OPTIM_RECIPES.get("sgd").build(params, settings)

    recipe("toy", flags=(IMAGE_FLAG, LLM_FLAG))(toy)
    assert "toy" in recipe_names(IMAGE_FLAG) and "toy" in recipe_names(LLM_FLAG)
    for build, _ in MODELS.values():
        build(torch.nn.Linear(2, 2), forget_recipe("toy", False))
    assert [dataclasses.astuple(s)[:3] for s in built] == [(FORGET_LR, LR, (LR, LR))] * 2
