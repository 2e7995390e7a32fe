"""One unlearning run on given forget/retain rows, shared by TOFU (``main_forget.py``) and
real-world unlearning (``real_world_unlearn.py``).

The entry scripts decide *which* rows, start model and reference model a run
uses and where it is saved; this module owns the flags every unlearning run
shares, their validation, the run's frozen :class:`UnlearnConfig` (built once by the
entry script), and the run itself: datasets for the loss's batch
kinds, the joint or alternating :class:`~LLM.schedule.Schedule`, the
``--optim_cfg`` optimizer (told each step's objective), the resume snapshots
and the saved model.
"""
from __future__ import annotations

import argparse
import time
from dataclasses import dataclass, fields
from functools import partial
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import torch

from common.checkpointing import add_resume_args
from common.device import add_device_args
from common.errors import UsageError, non_negative_float, positive_float, positive_int
from common.io import add_trust_args, write_run_record
from dualoptim.optimizers import evaluation_weights
from dualoptim.recipes import LLM_FLAG, is_dual_recipe, recipe_names
from common.nonfinite import add_nonfinite_args
from common.tracking import add_report_args, tracking
from common.seed import add_seed_args, seed_everything
from LLM.data import Row, UnlearnDataset, collate_unlearn
from LLM.losses import FORGET_LOSSES, UnlearnLoss
from LLM.models import (add_weight_args, apply_lora, load_causal_lm, load_tokenizer, resolve_precision,
                        trained_weights_dtype)
from LLM.options import PromptTemplate, add_model_args, template_from_args
from LLM.schedule import FORGET, JOINT, RETAIN, SCHEDULES, BatchStream, Schedule, steps_per_epoch
from LLM.trainer import (build_optimizer, build_scheduler, check_optim_cfg, prepare_for_training,
                         run_schedule, save_model, schedule_snapshots, training_precision)


def add_unlearn_args(parser: argparse.ArgumentParser, *, lr: float = 1e-5, forget_lr: float = 1e-5,
                     batch_size: int = 5, gradient_accumulation_steps: int = 8, forget_coeff: float = 0.1,
                     retain_freq: int = 5, optim_cfg: str = "adam", max_length: int = 500,
                     overwrite: bool = True) -> None:
    """The model, loss, optimizer, schedule, LoRA and resume flags (the original's config keys).

    The defaults are the values of the original's configs, which it always loads: TOFU's
    ``config/phi1-5_tofu.yaml`` and ``config/llama_tofu.yaml`` (they agree on every flag here;
    ``forget_coeff 0.1`` and ``retain_freq 5`` at lines 22 and 30).  Keyword arguments are the defaults
    that differ for the real-world config (``overwrite``: whether to add ``--overwrite``).  TOFU's
    default accumulation 8 gives one process the original's effective batch of 40 (it launches 2
    processes with batch 5 x accumulation 4); N processes keep it with ``--gradient_accumulation_steps 8/N``.
    """
    add_model_args(parser)
    parser.add_argument("--idk_path", type=str, default=None,
                        help="refusal answers, one a line (default: <data_path>/idontknow.jsonl)")
    parser.add_argument("--forget_loss", type=str, default="ME+GD", help=", ".join(FORGET_LOSSES.names()))
    parser.add_argument("--optim_cfg", type=str, default=optim_cfg, help=", ".join(recipe_names(LLM_FLAG)))
    parser.add_argument("--alternate", action="store_true",
                        help="alternate forget and retain steps (--forget_freq, --retain_freq); = --schedule alternate")
    parser.add_argument("--schedule", choices=SCHEDULES, default=None,
                        help="alternate: as --alternate; joint: every step on forget and retain rows, a dual_* "
                             "optimizer stepping its forget moments on the forget term's gradient and its retain "
                             "moments on the retain term's (default: joint steps on one state, or --alternate)")
    parser.add_argument("--forget_freq", type=positive_int, default=1, help="forget steps per cycle")
    parser.add_argument("--retain_freq", type=positive_int, default=retain_freq, help="retain steps per cycle")
    parser.add_argument("--lr", type=positive_float, default=lr, help="(retain) learning rate")
    parser.add_argument("--forget_lr", type=positive_float, default=forget_lr, help="forget learning rate of dual_adam")
    parser.add_argument("--num_epochs", type=positive_int, default=5)
    parser.add_argument("--batch_size", type=positive_int, default=batch_size, help="per-process micro-batch size")
    parser.add_argument("--gradient_accumulation_steps", type=positive_int, default=gradient_accumulation_steps,
                        help="micro-batches per step and process (effective batch: batch_size x this x processes)")
    parser.add_argument("--forget_coeff", type=non_negative_float, default=forget_coeff)
    parser.add_argument("--regularization_coeff", type=non_negative_float, default=1.0)
    parser.add_argument("--beta", type=positive_float, default=0.1, help="inverse temperature of NPO/DPO/AP")
    parser.add_argument("--weight_decay", type=non_negative_float, default=0.01)
    parser.add_argument("--max_grad_norm", type=non_negative_float, default=1.0, help="0: no clipping")
    parser.add_argument("--mask", action=argparse.BooleanOptionalAction, default=True,
                        help="exclude question tokens from the forget labels; --no-mask labels the question and "
                             "every padding position up to --max_length (with EOS), as the original's mask: false")
    parser.add_argument("--max_length", type=positive_int, default=max_length)
    parser.add_argument("--save_steps", type=save_steps_value, default="last",
                        help="also save checkpoint-<step> every this many steps: a number, steps_per_epoch, or "
                             "last (only checkpoint-last, the default)")
    add_weight_args(parser)
    add_seed_args(parser, default=1001)
    add_resume_args(parser, overwrite=overwrite, save_every="0: at the end of every epoch")
    add_device_args(parser)
    add_trust_args(parser)
    add_nonfinite_args(parser)
    add_report_args(parser)


def save_steps_value(text: str) -> str:
    """``--save_steps``: ``last``, ``steps_per_epoch`` or a positive step count (the original's values)."""
    if text in ("last", "steps_per_epoch") or (str(text).isdigit() and int(text) > 0):
        return str(text)
    raise argparse.ArgumentTypeError(f"expected last, steps_per_epoch or a positive number, got {text!r}")


def checkpoint_interval(save_steps: str, per_epoch: int, max_steps: int) -> int:
    """Steps between intermediate checkpoints (``max_steps``: none before ``checkpoint-last``)."""
    if save_steps == "last":
        return max_steps
    return per_epoch if save_steps == "steps_per_epoch" else int(save_steps)


def validate_unlearn_args(args: argparse.Namespace) -> UnlearnLoss:
    """Check the flags that depend on each other before anything is loaded or written; returns the loss.

    (Each flag's own range is checked by its argparse type.)
    """
    loss = FORGET_LOSSES.get(args.forget_loss)
    check_optim_cfg(args.optim_cfg)
    try:  # again for a --config value, which argparse leaves unconverted when YAML reads it as a number
        args.save_steps = save_steps_value(str(args.save_steps))
    except argparse.ArgumentTypeError as err:
        raise UsageError(f"--save_steps: {err}") from None
    if args.schedule == "joint" and args.alternate:
        raise UsageError("--schedule joint: conflicts with --alternate (= --schedule alternate); give one")
    args.alternate = args.alternate or args.schedule == "alternate"
    dual = is_dual_recipe(LLM_FLAG, args.optim_cfg)
    if args.schedule == "joint" and dual and loss.regularizer is None:
        raise UsageError(f"--schedule joint: --forget_loss {args.forget_loss} has no retain term for the retain "
                         f"moments of --optim_cfg {args.optim_cfg}; use e.g. {args.forget_loss}+GD")
    if args.alternate and loss.regularizer is None:
        raise UsageError(f"--alternate: --forget_loss {args.forget_loss} has no retain term; use e.g. "
                         f"{args.forget_loss}+GD")
    if args.alternate and any(kind.startswith("forget") for kind in loss.regularizer.kinds):
        # Retain steps draw retain rows only; LLMU's mismatch term needs forget questions.
        raise UsageError(f"--alternate: the retain term of --forget_loss {args.forget_loss} "
                         f"({loss.regularizer.name}) reads forget rows; train it jointly (without --alternate)")
    if dual and not args.alternate and args.schedule != "joint":
        raise UsageError(f"--optim_cfg {args.optim_cfg}: needs --alternate, or --schedule joint (a joint step on one "
                         f"loss serves both objectives, so there is no objective to pick an optimizer state for)")
    return loss


@dataclass(frozen=True)
class UnlearnConfig:
    """The settings one unlearning run reads: the flags of :func:`add_unlearn_args`, completed, typed and frozen.

    The entry script builds it once with :meth:`from_args` after :func:`validate_unlearn_args`;
    ``flags`` keeps every flag of the script, as ``run.json``, the tracker and the resume snapshots
    record them.
    """

    seed: int
    deterministic: bool
    dtype: str                          # compute precision, resolved for the device (LLM.models.resolve_precision)
    low_precision_weights: bool         # weights in dtype too (no float32 master copy)
    attn_implementation: Optional[str]  # resolved likewise; None: transformers' default
    use_LoRA: bool
    LoRA_r: int
    LoRA_alpha: int
    LoRA_dropout: float
    template: PromptTemplate            # of --model_family / the template flags
    max_length: int
    mask: bool
    alternate: bool
    schedule: Optional[str]             # "joint": split joint steps (split_joint); "alternate" is also alternate
    forget_freq: int
    retain_freq: int
    batch_size: int
    gradient_accumulation_steps: int
    num_epochs: int
    optim_cfg: str
    lr: float
    forget_lr: float
    weight_decay: float
    max_grad_norm: float
    forget_coeff: float
    regularization_coeff: float
    beta: float
    save_steps: str
    save_every: int
    resume: bool
    allow_nonfinite: bool
    flags: Mapping[str, Any]

    @property
    def split_joint(self) -> bool:
        """Whether joint steps keep the forget and retain gradients apart (``--schedule joint``, a dual recipe)."""
        return self.schedule == "joint" and is_dual_recipe(LLM_FLAG, self.optim_cfg)

    @classmethod
    def from_args(cls, args: argparse.Namespace, device) -> "UnlearnConfig":
        """Complete ``--dtype`` and the attention implementation for ``device`` (in ``args`` too, so the
        record has them) and freeze the run's settings."""
        resolve_precision(args, device)
        typed = {field.name: getattr(args, field.name) for field in fields(cls)
                 if field.name not in ("template", "flags")}
        return cls(template=template_from_args(args), flags=dict(vars(args)), **typed)


def needs_idk(loss: UnlearnLoss) -> bool:
    return any(kind.endswith("_idk") for kind in loss.kinds)


def unlearn(config: UnlearnConfig, accelerator, loss: UnlearnLoss, forget_rows: Sequence[Row],
            retain_rows: Sequence[Row], model_path: str, ref_path: str, out_dir: Path,
            idk_answers: Optional[Sequence[str]], max_steps: Optional[int] = None,
            desc: str = "unlearn", extra_metrics: Optional[dict] = None) -> dict:
    """Unlearn ``forget_rows`` from ``model_path`` with ``config``'s settings and save
    ``<out_dir>/checkpoint-last`` and ``run.json`` (its ``config``: ``config.flags``).

    With ``--save_steps`` the model is also saved as ``<out_dir>/checkpoint-<step>`` every that many
    steps before the last (the original's ``save_steps``; ``--eval_unlearn_step`` of the eval scripts
    reads them).
    ``max_steps`` defaults to ``num_epochs`` times :func:`~LLM.schedule.steps_per_epoch`;
    warm-up lasts one epoch when an epoch has more than one step (as the original).
    A resume snapshot goes to ``out_dir`` every ``--save_every`` steps (default: every
    epoch); with ``--resume`` the run continues from it.
    Returns the run's metrics (also written to ``run.json`` with the per-step history).
    """
    from accelerate.utils import DistributedType

    if config.split_joint and accelerator.distributed_type in (DistributedType.DEEPSPEED, DistributedType.FSDP):
        raise UsageError(f"--schedule joint: --optim_cfg {config.optim_cfg} keeps the forget and retain gradients "
                         f"apart in p.grad, which {accelerator.distributed_type.value} owns; launch with DDP or "
                         f"one process")
    seed_everything(config.seed, config.deterministic)
    tokenizer = load_tokenizer(model_path)
    model = load_causal_lm(model_path, trained_weights_dtype(config.dtype, config.low_precision_weights),
                           attn_implementation=config.attn_implementation)
    if config.use_LoRA:
        model = apply_lora(model, config.LoRA_r, config.LoRA_alpha, config.LoRA_dropout)
    ref_model = None
    if loss.needs_ref:  # frozen, so held in --dtype (as the original's reference model, forget.py:301-305)
        ref_model = load_causal_lm(ref_path, config.dtype, flag="--model_path (reference)",
                                   attn_implementation=config.attn_implementation).to(accelerator.device)
        ref_model.eval().requires_grad_(False)

    world, rank = accelerator.num_processes, accelerator.process_index
    collate = partial(collate_unlearn, pad_id=tokenizer.pad_token_id)
    make = partial(UnlearnDataset, tokenizer=tokenizer, template=config.template, max_length=config.max_length,
                   idk_answers=idk_answers, mask_question=config.mask, full_length=loss.full_length)
    if config.alternate:
        forget_set = make(forget_rows, kinds=loss.forget_term.kinds)
        retain_set = make(retain_rows, kinds=loss.regularizer.kinds)
        streams = {FORGET: BatchStream(forget_set, config.batch_size, collate, config.seed, rank, world),
                   RETAIN: BatchStream(retain_set, config.batch_size, collate, config.seed + 1, rank, world)}
    else:
        joint_set = make(forget_rows, kinds=loss.kinds, retain_rows=retain_rows)
        streams = {JOINT: BatchStream(joint_set, config.batch_size, collate, config.seed, rank, world)}
    per_epoch = steps_per_epoch(len(forget_rows), len(retain_rows), config.batch_size,
                                config.gradient_accumulation_steps, world, config.alternate, config.forget_freq,
                                config.retain_freq)
    if max_steps is None:
        max_steps = config.num_epochs * per_epoch
    schedule = Schedule(streams, max_steps, config.gradient_accumulation_steps, config.forget_freq,
                        config.retain_freq)

    optimizer = build_optimizer(config.optim_cfg, model, config.lr, config.forget_lr, config.weight_decay)
    scheduler = build_scheduler(optimizer, max_steps, warmup_steps=per_epoch if per_epoch > 1 else 0)
    model, optimizer = prepare_for_training(accelerator, model, optimizer, config.batch_size,
                                            config.gradient_accumulation_steps, config.max_grad_norm)
    precision = training_precision(accelerator, config.dtype)

    def step_loss(objective: str, batch) -> torch.Tensor:
        if objective == FORGET:
            return config.forget_coeff * loss.forget(model, ref_model, batch, config.beta)
        if objective == RETAIN:
            return config.regularization_coeff * loss.regularization(model, ref_model, batch, config.beta)
        return loss.joint(model, ref_model, batch, config.beta, config.forget_coeff, config.regularization_coeff)

    if accelerator.is_main_process:
        print(f"######### {desc} -> {out_dir}; max steps {max_steps}")
    snapshots = schedule_snapshots(accelerator, Path(out_dir), config.resume, config.flags,
                                   config.save_every or per_epoch)
    start = time.perf_counter()
    interval = checkpoint_interval(config.save_steps, per_epoch, max_steps)

    def save_intermediate(step: int) -> None:
        if step % interval == 0 and step < max_steps:
            with evaluation_weights(optimizer):  # a schedule-free optimizer's average, not its train point
                save_model(accelerator, model, tokenizer, Path(out_dir) / f"checkpoint-{step}", config.dtype)

    with tracking(config.flags, out_dir, enabled=accelerator.is_main_process) as reporter:
        history = run_schedule(accelerator, model, optimizer, scheduler, schedule, step_loss, config.max_grad_norm,
                               desc=desc, snapshots=snapshots, on_step=save_intermediate,
                               allow_nonfinite=config.allow_nonfinite, split_joint=config.split_joint,
                               precision=precision)
        reporter.metrics({"final_loss": history[-1]["loss"]} if history else {})
    seconds = time.perf_counter() - start
    save_model(accelerator, model, tokenizer, Path(out_dir) / "checkpoint-last", config.dtype)
    resumed_at = (snapshots.restored or {}).get("step", 0)  # seconds cover the steps run by this invocation
    metrics = dict(extra_metrics or {})
    metrics.update({"num_forget": len(forget_rows), "num_retain": len(retain_rows), "max_steps": max_steps,
                    "steps_per_epoch": per_epoch, "num_processes": world,
                    "final_loss": history[-1]["loss"] if history else None, "train_seconds": seconds,
                    "resumed_at_step": resumed_at,
                    "tokens_per_second": (sum(h["tokens"] for h in history[resumed_at:]) / seconds
                                          if seconds > 0 else 0.0),
                    "model_path": model_path, "ref_model_path": ref_path if loss.needs_ref else None})
    if accelerator.is_main_process:
        write_run_record(out_dir, config.flags, metrics, history=history)
    snapshots.remove()
    accelerator.free_memory()
    return metrics
