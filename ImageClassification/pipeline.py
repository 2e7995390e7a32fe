"""The run behind ``main_random.py``, ``main_forget.py``, ``main_random_sfron.py`` and ``main_random_lora.py``.

load flags -> check every input (method, checkpoint, mask, forget set) ->
unlearn -> evaluate -> print the research code's result lines -> write the
checkpoint, ``eval_result.json`` and ``run.json`` atomically.  All inputs are
validated before anything is written, so a bad command leaves an existing
``--save_dir`` untouched.

``--resume`` continues an interrupted run from its resume snapshot in
``--save_dir``; without one, but with the finished checkpoint there, it
re-evaluates that checkpoint (the research code's ``--resume``).
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Dict, Optional, Tuple

import torch
from torch import nn

from common.checkpointing import Snapshotter, refuse_overwrite
from common.device import get_device
from common.precision import amp_precision, check_precision
from common.distributed import SampleSharding, shard_forward
from common.errors import UsageError
from common.io import (atomic_torch_save, atomic_write_json, checkpoint_state_dict, check_writable_dir,
                       load_torch_file, write_run_record)
from common.saliency import Mask, check_mask
from common.seed import seed_everything
from common.tracking import tracking
from ImageClassification.config import UnlearnConfig
from ImageClassification.data import evaluation_loaders, load_unlearn_data, unlearn_loaders
from ImageClassification.evaluation import evaluate
from ImageClassification.models import build_model_from_config, load_weights, mask_from_original_format
from ImageClassification.unlearn import get_unlearn_method
from ImageClassification.unlearn.registry import RETRAIN_METHODS

if TYPE_CHECKING:
    from ImageClassification.lora import LoraAdapters

RESULT_FILE = "eval_result.json"


def checkpoint_name(unlearn: str) -> str:
    """``<unlearn>checkpoint.pth.tar``, the research code's name for an unlearned model."""
    return f"{unlearn}checkpoint.pth.tar"


def start_processes(config: UnlearnConfig) -> Tuple[SampleSharding, torch.device]:
    """This process's data-parallel sharding and device.

    A plain run: the trivial sharding and ``--device``/``--gpu``.  Under ``accelerate launch``:
    every process runs on the launcher's device for it (the CPU with ``--device cpu``), and
    only the main process prints to stdout (see :mod:`common.distributed`).
    """
    device = get_device(config.device, config.gpu)
    check_precision(device, amp_precision(config.amp, config.amp_dtype), "--amp_dtype")
    sharding = SampleSharding.from_launch(device, config.seed)
    sharding.print_on_main_only()
    return sharding, sharding.device(device)


def load_original_model(config: UnlearnConfig, device: torch.device) -> nn.Module:
    """A model of ``--arch`` for the dataset, with ``--model_path`` loaded unless the method retrains.

    Retraining starts from the architecture as constructed: its own initialisation, drawn after
    seeding with ``--train_seed`` as the research code does.
    """
    seed_everything(config.train_seed)
    retrain = config.unlearn in RETRAIN_METHODS
    model = build_model_from_config(config, pretrained=retrain)
    if not retrain:
        checkpoint = load_torch_file(config.model_path, "--model_path")
        load_weights(model, checkpoint, "--model_path", config.model_path, config.arch, config.dataset)
    return model.to(device)


def load_ic_mask(path: str, model: nn.Module, arch: str) -> Mask:
    """``--mask_path``: a mask of ours or one saved by the research code's ``generate_mask.py``."""
    return check_mask(mask_from_original_format(load_torch_file(path, "--mask_path"), arch), model,
                      f"--mask_path {path}")


def print_results(metrics: Dict[str, float]) -> None:
    """The lines the research code prints and its ``parse_result.py`` reads (forget acc is UA)."""
    print(f"retain acc: {metrics['retain_acc']}")
    print(f"forget acc: {metrics['UA']}")
    print(f"val acc: {metrics['val_acc']}")
    print(f"test acc: {metrics['test_acc']}")
    print(f"MIA: {metrics['mia_raw']}")


def run_unlearning(config: UnlearnConfig, adapters: Optional[LoraAdapters] = None) -> Dict[str, float]:
    """Unlearn, evaluate and save one run; returns the metrics.

    ``adapters`` (``main_random_lora.py``): the method trains LoRA adapters attached to the
    original model, merged into its weights before evaluation.
    """
    if not config.save_dir:
        raise UsageError("--save_dir: required (folder for the unlearned model and results)")
    method = get_unlearn_method(config.unlearn)
    save_dir = Path(config.save_dir)
    continued = config.resume and Snapshotter(save_dir).exists()
    reevaluated = config.resume and not continued and (save_dir / checkpoint_name(config.unlearn)).exists()
    if not (continued or reevaluated):
        refuse_overwrite(save_dir, [RESULT_FILE], config.overwrite)
    sharding, device = start_processes(config)
    seed_everything(config.seed, config.deterministic)
    data = load_unlearn_data(config, device=device)
    loaders = unlearn_loaders(data, config)
    model = shard_forward(load_original_model(config, device), sharding)
    mask = load_ic_mask(config.mask_path, model, config.arch) if config.mask_path else None
    if adapters is not None:
        adapters.check(model)
    check_writable_dir(save_dir)
    print(f"number of retain dataset {len(data.retain_index)}")
    print(f"number of forget dataset {len(data.forget_index)}")

    with tracking(config.record(), save_dir, enabled=sharding.is_main) as reporter:
        if reevaluated:
            # the research code's --resume: evaluate the finished unlearned model again
            path = save_dir / checkpoint_name(config.unlearn)
            model.load_state_dict(checkpoint_state_dict(load_torch_file(path, "--resume"), f"--resume {path}"))
        else:
            seed_everything(config.seed)
            if adapters is not None:
                adapters.attach(model)
            method(loaders, model, config, mask, device)
            if adapters is not None:
                adapters.merge(model)
        metrics = evaluate(model, evaluation_loaders(data, config), device, config.mia)
        reporter.metrics(metrics)
    if not sharding.is_main:  # every process has the same metrics; the main one reports and saves them
        return metrics
    # SalUn is RL with a saliency mask: give it its own name so results group apart from plain RL
    method_name = "SalUn" if config.unlearn == "RL" and config.mask_path else config.unlearn
    # the group header of the research code's logs: a saved stdout is a parse_result.py --log_paths input
    print(f"model {method_name} {config.optim}")
    print(f"alpha {config.unlearn_lr}")
    print_results(metrics)
    atomic_torch_save({"state_dict": model.state_dict(), "evaluation_result": metrics, "arch": config.arch},
                      save_dir / checkpoint_name(config.unlearn))
    atomic_torch_save(metrics, save_dir / f"{config.unlearn}eval_result.pth.tar")
    atomic_write_json({"method": method_name, "unlearn": config.unlearn, "optim": config.optim,
                       "unlearn_lr": config.unlearn_lr, "retain_lr": config.retain_lr, "seed": config.seed, **metrics},
                      save_dir / RESULT_FILE)
    write_run_record(save_dir, config.record(), metrics, num_processes=sharding.world)
    Snapshotter(save_dir).remove()
    return metrics
