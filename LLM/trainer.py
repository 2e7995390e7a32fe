"""The optimisation loop shared by fine-tuning and unlearning, on top of ``accelerate``.

One loop serves every setting: the :class:`~LLM.schedule.Schedule` says which
objective each optimizer step serves and supplies its micro-batches; the loop
tells the optimizer that objective explicitly (``dualoptim.optimizers.set_objective``,
a no-op for plain optimizers) before accumulating the step's gradients.  It
offers a resume snapshot (:class:`common.checkpointing.Snapshotter`) after
every step: model, optimizer (both moment sets of ``DecoupledAdamW``),
scheduler, the schedule's stream positions, the per-step history and every
process's RNG state.

Precision (:func:`training_precision`): the trained weights and the optimizer
state are float32 and each micro-batch's loss is computed under ``--dtype``
autocast (:class:`common.precision.MixedPrecision`), as the original's Hugging
Face ``Trainer`` with ``bf16=True`` does; the model is saved in ``--dtype``.
"""
from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional

import torch
from transformers import get_linear_schedule_with_warmup

from common import tracking
from common.checkpointing import ProcessGroup, Snapshotter
from common.device import get_device
from dualoptim.joint import SplitGradients
from dualoptim.optimizers import eval_weights, set_objective
from common.errors import UsageError
from dualoptim.recipes import LLM_FLAG, RecipeSettings, build_recipe, get_recipe, import_dualoptim_8bit
from common.nonfinite import check_finite_loss
from common.progress import progress
from common.precision import MixedPrecision
from LLM.models import decay_parameter_groups, save_pretrained_atomic
from LLM.schedule import FORGET, JOINT, RETAIN, Schedule

def check_optim_cfg(name: str) -> None:
    """Fail early (before anything is loaded or written) on an unknown or unavailable ``--optim_cfg``."""
    get_recipe(LLM_FLAG, name)
    if name.endswith("_8bit"):
        import_dualoptim_8bit(LLM_FLAG, name)


def make_accelerator(device=None, gpu=0):
    """An ``Accelerator`` honouring ``--device``: CPU when asked for or when CUDA is absent.

    Under ``accelerate launch`` the launcher's settings (processes, DeepSpeed,
    FSDP, mixed precision) apply; ``--device`` is validated either way.
    """
    from accelerate import Accelerator
    resolved = get_device(device, gpu)
    if resolved.type == "cpu" and os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true":
        # accelerate would quietly fall back to plain data parallelism (it runs DeepSpeed on accelerators only)
        raise UsageError("--device cpu: the accelerate config asks for DeepSpeed, which accelerate runs on GPUs "
                         "only; launch CPU processes with LLM/config/accelerate/ddp.yaml or --multi_gpu")
    return Accelerator(cpu=resolved.type == "cpu")


def prepare_for_training(accelerator, model, optimizer, micro_batch_size: int, accumulation: int,
                         max_grad_norm: float):
    """``accelerator.prepare(model, optimizer)``; under DeepSpeed, configured as :func:`run_schedule` needs.

    DeepSpeed reads the per-process micro-batch size from a prepared dataloader, and our schedules
    prepare none. It runs the optimizer step inside ``accelerator.backward``: knowing the schedule's
    accumulation count, it steps on each step's last micro-batch (also with accelerate versions that do
    not pass ``sync_gradients`` on) and averages the micro-batch losses itself. It clips gradients
    inside that step, so ``max_grad_norm`` goes into its config (0 disables clipping, as elsewhere).
    """
    plugin = accelerator.state.deepspeed_plugin
    if plugin is not None:
        plugin.deepspeed_config.update(train_micro_batch_size_per_gpu=micro_batch_size,
                                       gradient_accumulation_steps=accumulation,
                                       gradient_clipping=max(max_grad_norm or 0.0, 0.0))
    return accelerator.prepare(model, optimizer)


#: ``--dtype`` -> accelerate's ``mixed_precision`` name
ACCELERATE_PRECISION = {"float32": "no", "bfloat16": "bf16", "float16": "fp16"}


def check_launch_precision(accelerator, dtype: str) -> None:
    """Under ``accelerate launch`` with a ``mixed_precision`` config (the shipped configs say bf16),
    ``--dtype`` must name the same precision: a one-line error otherwise, never a silent switch.
    Entry scripts call it before writing anything."""
    launched = str(accelerator.mixed_precision)
    if launched != "no" and launched != ACCELERATE_PRECISION[dtype]:
        wanted = {value: key for key, value in ACCELERATE_PRECISION.items()}.get(launched, launched)
        raise UsageError(f"--dtype {dtype}: the accelerate launch config runs mixed_precision {launched}; "
                         f"pass --dtype {wanted}, or launch with --mixed_precision {ACCELERATE_PRECISION[dtype]}")


def training_precision(accelerator, dtype: str) -> MixedPrecision:
    """The ``--dtype`` autocast (and float16 loss scaler) of :func:`run_schedule`.

    Under a launch config's mixed precision (:func:`check_launch_precision`) accelerate autocasts the
    prepared model and scales float16 losses itself: the loop's own autocast also covers the reference
    model and the loss, and the loop adds no second scaler.  DeepSpeed scales float16 losses in its
    engine, so the loop adds none there either.
    """
    check_launch_precision(accelerator, dtype)
    own_scaler = accelerator.mixed_precision == "no" and accelerator.state.deepspeed_plugin is None
    return MixedPrecision(accelerator.device, dtype, "--dtype", scaler=own_scaler)


def save_model(accelerator, model, tokenizer, path, dtype: Optional[str] = None) -> None:
    """Gather the (possibly sharded) model and write it from the main process, in ``dtype``
    (``--dtype``; ``None``: the weights' own) -- see :func:`LLM.models.save_pretrained_atomic`."""
    accelerator.wait_for_everyone()
    unwrapped = accelerator.unwrap_model(model)
    state_dict = None if hasattr(unwrapped, "merge_and_unload") else accelerator.get_state_dict(model)
    if accelerator.is_main_process:
        save_pretrained_atomic(unwrapped, tokenizer, path, state_dict=state_dict, dtype=dtype)
    accelerator.wait_for_everyone()


def build_optimizer(name: str, model, lr: float, forget_lr: float, weight_decay: float):
    """The ``--optim_cfg name`` recipe (``dualoptim.recipes``) on the model's weight-decay param groups.

    Its one torch optimizer is returned: every step runs at ``lr`` (scheduled), a
    ``dual_*`` optimizer's forget steps at ``forget_lr``; :func:`run_schedule`
    tells it each step's objective.  SGD runs without momentum, as the Hugging
    Face ``Trainer`` builds it.
    """
    if lr <= 0 or forget_lr <= 0:
        raise UsageError(f"--lr/--forget_lr: must be positive, got {lr} and {forget_lr}")
    fp32_params = import_dualoptim_8bit(LLM_FLAG, name).embedding_weights(model) if name.endswith("_8bit") else ()
    settings = RecipeSettings(forget_lr=forget_lr, retain_lr=lr, shared_lrs=(lr, lr), momentum=0.0,
                              weight_decay=weight_decay, fp32_params=fp32_params)
    (optimizer,) = build_recipe(LLM_FLAG, name, decay_parameter_groups(model, weight_decay), settings).optimizers
    return optimizer


def build_scheduler(optimizer, max_steps: int, warmup_steps: int):
    """Linear warm-up then linear decay to zero (Hugging Face ``Trainer``'s default)."""
    return get_linear_schedule_with_warmup(optimizer, warmup_steps, max_steps)


def schedule_snapshots(accelerator, save_dir: Path, resume: bool, record: Mapping[str, Any],
                       every: int) -> Snapshotter:
    """Resume snapshots of a :func:`run_schedule` run in ``save_dir`` every ``every`` steps (rank 0 writes);
    ``resume``: ``--resume``, ``record``: the run's flags, which a resumed run must match.

    Under DeepSpeed and FSDP the optimizer state is sharded over the
    processes, so no single process can write it: snapshots are off there.
    ``--resume`` still starts afresh (the sweep scripts always pass it) but
    refuses a snapshot it cannot continue.
    """
    from accelerate.utils import DistributedType

    if accelerator.distributed_type in (DistributedType.DEEPSPEED, DistributedType.FSDP):
        snapshot = Snapshotter(save_dir)
        if resume and snapshot.exists():
            raise UsageError(f"--resume {snapshot.path}: cannot be continued under "
                             f"{accelerator.distributed_type.value} (the optimizer state is sharded over the "
                             f"processes); resume it without DeepSpeed/FSDP, or remove it to start afresh")
        return Snapshotter(None)
    return Snapshotter(save_dir, every=every, resume=resume, config=record,
                       processes=ProcessGroup.of(accelerator))


def run_schedule(accelerator, model, optimizer, scheduler, schedule: Schedule,
                 step_loss: Callable[[str, Dict], torch.Tensor], max_grad_norm: float = 1.0,
                 desc: str = "train", snapshots: Optional[Snapshotter] = None,
                 on_step: Optional[Callable[[int], None]] = None,
                 allow_nonfinite: bool = False, split_joint: bool = False,
                 precision: Optional[MixedPrecision] = None) -> List[Dict[str, float]]:
    """Run every step of ``schedule``; returns ``{step, objective, loss, lr, tokens}`` per step.

    ``step_loss(objective, micro_batch)`` returns the loss of one micro-batch;
    it is divided by the accumulation count so a step averages its
    micro-batches.  Gradients are synchronised across processes only on a
    step's last micro-batch.  Under DeepSpeed (prepared with
    :func:`prepare_for_training`) ``accelerator.backward`` runs the optimizer
    step on that micro-batch, and ``optimizer.step()`` / ``zero_grad()`` are
    no-ops.  The reported loss is the mean over processes; ``tokens`` counts
    the attended input tokens of the step over all processes (for throughput).
    With ``snapshots`` the run continues from its last snapshot when resuming
    and offers one after every step.  ``on_step(n)`` runs on every process after
    the ``n``-th step (e.g. to save intermediate checkpoints), with the weights the optimizer trains on
    in the model: a save wraps itself in ``dualoptim.evaluation_weights(optimizer)``.  The run returns
    with the weights to evaluate in the model (``dualoptim.eval_weights``: a schedule-free forget
    optimizer's average; the same weights for every other optimizer).
    A NaN/inf loss (mean over processes) stops the run before
    its optimizer step unless ``allow_nonfinite`` (under DeepSpeed, which steps inside ``backward``,
    after it).  ``precision`` (:func:`training_precision`; default float32) is the autocast each
    micro-batch's loss runs under and, for float16, the scaler of its backward pass and step.

    ``split_joint`` (``--schedule joint`` with a ``dual_*`` optimizer; not under DeepSpeed or FSDP): a joint
    step's micro-batches give ``step_loss("forget", batch)`` and ``step_loss("retain", batch)`` their own
    backward pass and gradient sum (:class:`dualoptim.joint.SplitGradients`); the step then updates the forget
    moments on the forget sum and the retain moments on the retain sum, each clipped to ``max_grad_norm`` on its
    own. Its loss is the sum of the two terms, as the joint loss.
    """
    precision = precision or MixedPrecision(accelerator.device)
    snapshots = (snapshots or Snapshotter(None)).register(
        model=accelerator.unwrap_model(model), optimizer=optimizer, scheduler=scheduler, schedule=schedule)
    if precision.scaler.is_enabled():  # float16 loss scale: part of the state a resumed run continues
        snapshots.register(grad_scaler=precision.scaler)
    loop = snapshots.restore() or {"step": 0, "history": []}
    model.train()
    history = loop["history"]
    deepspeed = accelerator.state.deepspeed_plugin is not None
    split = SplitGradients(model.parameters()) if split_joint else None
    if split is not None and precision.scaler.is_enabled():
        # one GradScaler unscales an optimizer once per step; a split step would unscale it twice
        raise UsageError("--schedule joint with a dual_* optimizer cannot use float16 loss scaling; "
                         "use --dtype bfloat16 or float32")

    def clip_gradients() -> None:
        if max_grad_norm and max_grad_norm > 0:
            precision.unscale_(optimizer)  # clip the true gradients (a no-op unless float16)
            accelerator.clip_grad_norm_(model.parameters(), max_grad_norm)

    bar = progress(schedule.steps(loop["step"]), total=len(schedule), initial=loop["step"], desc=desc,
                   disable=not accelerator.is_main_process)
    for step, objective, micro_batches in bar:
        if objective in (FORGET, RETAIN):  # a joint or plain-training step keeps the optimizer's objective
            set_objective(optimizer, objective)
        total = torch.zeros((), device=accelerator.device)
        tokens = torch.zeros((), dtype=torch.long, device=accelerator.device)
        for index, batch in enumerate(micro_batches):
            tokens += count_tokens(batch)
            batch = _to_device(batch, accelerator.device)
            last = index == len(micro_batches) - 1
            sync = contextlib.nullcontext() if last else accelerator.no_sync(model)
            # accelerate >= 1.9 steps DeepSpeed's optimizer in ``backward`` whenever gradients sync
            accelerator.sync_gradients = last
            with sync:
                if split is not None and objective == JOINT:
                    with precision.autocast():
                        forget = step_loss(FORGET, batch) / len(micro_batches)
                    split.backward_forget(lambda: accelerator.backward(forget))
                    with precision.autocast():
                        retain = step_loss(RETAIN, batch) / len(micro_batches)
                    accelerator.backward(retain)
                    loss = forget + retain
                else:
                    with precision.autocast():
                        raw = step_loss(objective, batch)
                    loss = raw / len(micro_batches)
                    # DeepSpeed divides by the accumulation count itself (see prepare_for_training)
                    accelerator.backward(precision.scale(raw if deepspeed else loss))
            total += loss.detach()
        group = optimizer.param_groups[0]
        # DecoupledAdamW's forget steps run at forget_lr_ratio times the scheduled lr; the others at lr
        lr = group["lr"] * (group.get("forget_lr_ratio", 1.0) if objective == "forget" else 1.0)
        mean_loss = accelerator.reduce(total, reduction="mean")
        check_finite_loss(mean_loss, step + 1, objective, lr, allow_nonfinite)
        if split is not None and objective == JOINT:
            split.forget_step(optimizer, clip_gradients)  # leaves the retain sum and objective for the step below
        clip_gradients()
        precision.step(optimizer)  # skipped when float16 gradients overflowed
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        mean_loss = mean_loss.item()
        num_tokens = int(accelerator.reduce(tokens, reduction="sum").item())
        history.append({"step": step + 1, "objective": objective, "loss": mean_loss, "lr": lr,
                        "tokens": num_tokens})
        tracking.current().step({objective: mean_loss}, optimizer, step=step + 1)
        bar.set_postfix(objective=objective, loss=f"{mean_loss:.4f}")
        if on_step is not None:
            on_step(step + 1)
        snapshots.step(step + 1, len(schedule), step=step + 1, history=history)
    eval_weights(optimizer)  # what the caller evaluates and saves (see the docstring)
    return history


def count_tokens(batch) -> int:
    """Attended tokens of a micro-batch: the sum of every ``attention_mask`` in it (all batch kinds)."""
    if isinstance(batch, dict):
        if "attention_mask" in batch:
            return int(batch["attention_mask"].sum())
        return sum(count_tokens(value) for value in batch.values())
    return 0


def _to_device(batch, device):
    if isinstance(batch, torch.Tensor):
        return batch.to(device)
    if isinstance(batch, dict):
        return {key: _to_device(value, device) for key, value in batch.items()}
    return batch
