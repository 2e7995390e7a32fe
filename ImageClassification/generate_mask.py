"""SalUn saliency masks for ``--mask_path``.

    python generate_mask.py --save_dir mask --model_path MODEL --num_indexes_to_replace 4500 --unlearn_epochs 1

The DualOptim research code scores every weight by
``|mean forget gradient| - |mean retain gradient|`` of the (negated)
cross-entropy, with the model in eval mode, and for each threshold
``t`` in 0.1, ..., 1.0 keeps the top ``t`` fraction of all weights (ranked
globally) in ``<save_dir>/with_<t>.pt``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict

import torch
import torch.nn.functional as F

from common.errors import UsageError, cli_main
from common.io import check_writable_dir, write_run_record
from common.saliency import SALUN_THRESHOLDS, accumulate_gradients, save_masks, top_fraction_masks
from common.seed import seed_everything
from ImageClassification.arg_parser import build_parser, parse_config
from ImageClassification.config import UnlearnConfig
from ImageClassification.data import load_unlearn_data, unlearn_loaders
from ImageClassification.pipeline import load_original_model, start_processes
from ImageClassification.unlearn.registry import RETRAIN_METHODS


def saliency_scores(model, forget_loader, retain_loader, device) -> Dict[str, torch.Tensor]:
    """``|g_forget| - |g_retain|`` per weight, ``g`` the mean gradient of ``-CE`` over a loader."""
    model.eval()

    def negated_ce(net, batch):
        images, targets = batch
        return -F.cross_entropy(net(images.to(device)), targets.to(device))

    forget_grad = accumulate_gradients(model, forget_loader, negated_ce)
    retain_grad = accumulate_gradients(model, retain_loader, negated_ce)
    return {name: forget_grad[name].abs() - retain_grad[name].abs() for name in forget_grad}


def generate(config: UnlearnConfig) -> list:
    if not config.save_dir:
        raise UsageError("--save_dir: required (folder for the with_<t>.pt masks)")
    sharding, device = start_processes(config)
    seed_everything(config.seed, config.deterministic)
    data = load_unlearn_data(config, device=device)
    loaders = unlearn_loaders(data, config)
    if config.unlearn in RETRAIN_METHODS:
        # a mask is always computed from the original model, never a fresh one
        config = config.replace(unlearn="RL")
    model = load_original_model(config, device)
    check_writable_dir(config.save_dir)
    if not sharding.is_main:
        # Under accelerate launch the saliency pass is not split (its eval-mode gradients would not
        # be, see common.distributed.shard_forward): the main process computes and writes the masks.
        return []
    scores = saliency_scores(model, loaders.forget_loader, loaders.retain_loader, device)
    paths = save_masks(top_fraction_masks(scores, SALUN_THRESHOLDS), config.save_dir)
    write_run_record(config.save_dir, config.record(), {"masks": [str(p) for p in paths]},
                     num_processes=sharding.world)
    print(f"saved {len(paths)} masks to {Path(config.save_dir)}")
    return paths


@cli_main
def main(argv=None):
    return generate(parse_config(argv, build_parser("Generate SalUn saliency masks")))


if __name__ == "__main__":
    main()
