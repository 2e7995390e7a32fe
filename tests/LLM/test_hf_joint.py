"""``DualOptimJointTrainerMixin``: open-unlearning-shaped joint-loss Trainers step DualOptim from one class line and
end with the weights of two independent AdamW optimizers, one per term."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

import joint_trainers as jt
from dualoptim import DecoupledAdamW, UsageError
from dualoptim.hf import DualOptimJointTrainerMixin, DualOptimTrainerMixin, check_transformers
from LLM.schedule import FORGET, JOINT, Schedule
from LLM.trainer import (build_optimizer, build_scheduler, make_accelerator, prepare_for_training, run_schedule,
                         schedule_snapshots)

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def batches(tiny_model, tofu_dir):
    return jt.joint_batches(tiny_model, tofu_dir, 2 * jt.STEPS * jt.ACCUMULATION)


def assert_weights(got, expected, start=None):
    for key, value in expected.items():
        torch.testing.assert_close(got[key], value, rtol=1e-5, atol=1e-6, msg=key)
    if start is not None:
        assert any(not torch.equal(start[k], got[k]) for k in start)


def test_graddiff_with_accumulation_equals_two_adamw(tiny_model, batches, tmp_path, one_thread):
    trainer = jt.make_trainer(jt.DualGradDiff, tiny_model, batches, tmp_path)
    trainer.train()
    optimizer = trainer.optimizer.optimizer if hasattr(trainer.optimizer, "optimizer") else trainer.optimizer
    assert isinstance(optimizer, DecoupledAdamW)
    state = optimizer.state[next(trainer.model.parameters())]
    # every step fed both moment sets: forget first, then retain (the objective left set for the next step)
    assert float(state["step_forget"]) == float(state["step_retain"]) == jt.STEPS
    assert optimizer.objective == "retain"
    assert all(float(state[k].abs().sum()) > 0 for k in ("exp_avg_forget", "exp_avg_retain"))
    start = AutoModelForCausalLM.from_pretrained(tiny_model).state_dict()
    assert_weights(trainer.model.state_dict(), jt.two_adamw(tiny_model, batches), start)
    # the logged loss is the joint loss's mean over the step's micro-batches
    first = next(entry for entry in trainer.state.log_history if "loss" in entry)
    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    with torch.no_grad():
        joint = [jt.GAMMA * jt.nll_ascent(model, b["forget"]) + jt.ALPHA * jt.nll(model, b["retain"])
                 for b in batches[:jt.ACCUMULATION]]
    assert first["loss"] == pytest.approx(float(sum(joint) / len(joint)), rel=1e-4)


def test_two_pass_split_gives_the_same_weights(tiny_model, batches, tmp_path, one_thread):
    class TwoPassGradDiff(DualOptimJointTrainerMixin, jt.GradDiffLike):
        gradient_split = "two_pass"

    trainer = jt.make_trainer(TwoPassGradDiff, tiny_model, batches, tmp_path)
    trainer.train()
    assert_weights(trainer.model.state_dict(), jt.two_adamw(tiny_model, batches))


def test_npo_with_a_frozen_reference_equals_two_adamw(tiny_model, batches, tmp_path, one_thread):
    trainer = jt.make_trainer(jt.DualNPO, tiny_model, batches, tmp_path, accumulation=1)
    trainer.train()
    ref = trainer.ref_model.state_dict()
    assert_weights(ref, AutoModelForCausalLM.from_pretrained(tiny_model).state_dict())  # stayed frozen
    assert_weights(trainer.model.state_dict(), jt.two_adamw(tiny_model, batches, npo=True, accumulation=1))


def test_resuming_from_a_checkpoint_continues_exactly(tiny_model, batches, tmp_path, one_thread):
    steps = 4
    straight = jt.make_trainer(jt.DualGradDiff, tiny_model, batches, tmp_path / "straight", steps=steps)
    straight.train()
    first = jt.make_trainer(jt.DualGradDiff, tiny_model, batches, tmp_path / "run", steps=steps,
                            save_strategy="steps", save_steps=2)
    first.train()
    checkpoint = tmp_path / "run" / "checkpoint-2"
    saved = torch.load(checkpoint / "optimizer.pt", weights_only=True)
    assert {"exp_avg_forget", "exp_avg_retain", "exp_avg_sq_forget", "exp_avg_sq_retain"} <= set(saved["state"][0])
    assert saved["param_groups"][0]["forget_lr_ratio"] == pytest.approx(jt.FORGET_LR / jt.LR)
    resumed = jt.make_trainer(jt.DualGradDiff, tiny_model, batches, tmp_path / "run", steps=steps,
                              save_strategy="steps", save_steps=2)
    resumed.train(resume_from_checkpoint=str(checkpoint))
    assert_weights(resumed.model.state_dict(), straight.model.state_dict())
    assert_weights(resumed.model.state_dict(), jt.two_adamw(tiny_model, batches, steps=steps))


@pytest.mark.slow  # about 30 s: a fresh interpreter imports transformers under accelerate
def test_a_one_process_accelerate_launch_gives_the_reference(tiny_model, tofu_dir, batches, tmp_path, one_thread):
    out = tmp_path / "launched.pt"
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    result = subprocess.run([sys.executable, "-m", "accelerate.commands.launch", "--cpu", "--num_processes", "1",
                             "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
                             str(REPO / "tests" / "LLM" / "joint_trainers.py"), str(tiny_model), str(tofu_dir),
                             str(out)], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    launched = torch.load(out, weights_only=True)
    assert_weights(launched, jt.two_adamw(tiny_model, jt.joint_batches(tiny_model, tofu_dir,
                                                                       jt.STEPS * jt.ACCUMULATION)))


def test_a_joint_batch_or_a_tagged_one_is_sent_to_the_right_mixin(tiny_model, batches, tmp_path):
    class TaggedGradDiff(DualOptimTrainerMixin, jt.GradDiffLike):
        pass

    tagged = jt.make_trainer(TaggedGradDiff, tiny_model, [{**b, "objective": "forget"} for b in batches], tmp_path)
    with pytest.raises(ValueError, match="holds both a 'forget' and a 'retain' set.*list DualOptimJointTrainerMixin"):
        tagged.train()
    with pytest.raises(ValueError, match="holds both a 'forget' and a 'retain' set"):
        tagged.objective_of(dict(batches[0]))  # untagged too
    joint = jt.make_trainer(jt.DualGradDiff, tiny_model, [{**b, "objective": "forget"} for b in batches], tmp_path)
    with pytest.raises(ValueError, match="tagged with one 'objective'.*list DualOptimTrainerMixin first"):
        joint.train()


def test_a_loss_the_terms_split_cannot_see_is_refused(tiny_model, batches, tmp_path):
    class ExtraTerm(jt.GradDiffLike):
        def compute_loss(self, model, inputs, return_outputs=False):
            return super().compute_loss(model, inputs) + 0.1 * jt.nll(model, inputs["forget"])

    class RightHandCoefficient(jt.GradDiffLike):
        def compute_loss(self, model, inputs, return_outputs=False):
            return jt.nll_ascent(model, inputs["forget"]) * self.gamma + self.alpha * jt.nll(model, inputs["retain"])

    class DualExtra(DualOptimJointTrainerMixin, ExtraTerm):
        pass

    class DualRight(DualOptimJointTrainerMixin, RightHandCoefficient):
        pass

    with pytest.raises(ValueError, match=r"compute_loss returned .* not gamma \* forget \+ alpha \* retain"):
        jt.make_trainer(DualExtra, tiny_model, batches, tmp_path).train()
    with pytest.raises(ValueError, match=r"formed gamma \* <tensor> 0 and alpha \* <tensor> 1 times.*two_pass"):
        jt.make_trainer(DualRight, tiny_model, batches, tmp_path).train()


def test_a_trainer_without_the_coefficients_or_an_old_transformers_is_refused(tiny_model, batches, tmp_path):
    class NoAlpha(DualOptimJointTrainerMixin, jt.GradDiffLike):
        retain_coefficient = "retain_weight"

    with pytest.raises(UsageError, match="NoAlpha: no number 'retain_weight'"):
        jt.make_trainer(NoAlpha, tiny_model, batches, tmp_path)
    with pytest.raises(UsageError, match="DualGradDiff: DualOptimJointTrainerMixin does not run under fp16"):
        jt.make_trainer(jt.DualGradDiff, tiny_model, batches, tmp_path, fp16=True)

    class ShardedGradDiff(jt.GradDiffLike):  # as the Trainer marks itself under an FSDP launch
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.is_fsdp_enabled = True

    class DualSharded(DualOptimJointTrainerMixin, ShardedGradDiff):
        pass

    with pytest.raises(UsageError, match="DualSharded: DualOptimJointTrainerMixin does not run under FSDP"):
        jt.make_trainer(DualSharded, tiny_model, batches, tmp_path)
    with pytest.raises(UsageError, match=r"^DualOptimTrainerMixin: needs transformers >= 4.46 .* found 4.45.1"):
        check_transformers("DualOptimTrainerMixin", "4.45.1")
    check_transformers("DualOptimTrainerMixin", "4.46.0")
    with pytest.raises(UsageError, match=r"^DualOptimJointTrainerMixin: needs transformers >= 4.55 .* found 4.53.0"):
        check_transformers("DualOptimJointTrainerMixin", "4.53.0")
    assert jt.DualGradDiff.mixin == "DualOptimJointTrainerMixin"


class StopAt(Exception):
    pass


def project_loop(model_path, tofu_dir, steps=jt.STEPS, snapshot_dir=None, resume=False, stop_at=None):
    """The project's loop (``--schedule joint --optim_cfg dual_adam``) on the same joint micro-batches."""
    model = AutoModelForCausalLM.from_pretrained(model_path)
    accelerator = make_accelerator("cpu")
    optimizer = build_optimizer("dual_adam", model, jt.LR, jt.FORGET_LR, jt.WEIGHT_DECAY)
    scheduler = build_scheduler(optimizer, steps, jt.WARMUP)
    model, optimizer = prepare_for_training(accelerator, model, optimizer, jt.BATCH, jt.ACCUMULATION,
                                            jt.MAX_GRAD_NORM)
    schedule = Schedule({JOINT: jt.joint_stream(model_path, tofu_dir)}, steps, jt.ACCUMULATION)

    def step_loss(objective, batch):
        if objective == FORGET:
            return jt.GAMMA * jt.nll_ascent(model, batch["forget"])
        return jt.ALPHA * jt.nll(model, batch["retain"])

    def stop(step):
        if step == stop_at:
            raise StopAt

    snapshots = None if snapshot_dir is None else schedule_snapshots(accelerator, snapshot_dir, resume, {}, 1)
    history = run_schedule(accelerator, model, optimizer, scheduler, schedule, step_loss, jt.MAX_GRAD_NORM,
                           snapshots=snapshots, on_step=stop, split_joint=True)
    return accelerator.unwrap_model(model).state_dict(), history


def test_the_project_loops_schedule_joint_equals_two_adamw(tiny_model, tofu_dir, batches, one_thread):
    weights, history = project_loop(tiny_model, tofu_dir)
    assert [entry["objective"] for entry in history] == [JOINT] * jt.STEPS
    assert_weights(weights, jt.two_adamw(tiny_model, batches), AutoModelForCausalLM.from_pretrained(tiny_model)
                   .state_dict())


def test_the_project_loops_schedule_joint_resumes_exactly(tiny_model, tofu_dir, tmp_path, one_thread):
    straight, _ = project_loop(tiny_model, tofu_dir, steps=3)
    with pytest.raises(StopAt):  # stops after step 2, whose snapshot is not written: resumes from step 1
        project_loop(tiny_model, tofu_dir, steps=3, snapshot_dir=tmp_path, stop_at=2)
    resumed, history = project_loop(tiny_model, tofu_dir, steps=3, snapshot_dir=tmp_path, resume=True)
    assert [entry["step"] for entry in history] == [1, 2, 3]
    for key, value in straight.items():
        assert torch.equal(resumed[key], value), key


def test_main_forget_runs_schedule_joint_with_dual_adam(tofu_dir, tiny_model, tmp_path):
    from LLM import main_forget

    main_forget.main(["--model_family", "plain", "--model_path", str(tiny_model), "--data_path", str(tofu_dir),
                      "--split", "forget01", "--task_list", "1", "--forget_loss", "NPO+GD", "--schedule", "joint",
                      "--optim_cfg", "dual_adam", "--lr", "1e-3", "--forget_lr", "5e-3", "--num_epochs", "2",
                      "--batch_size", "2", "--gradient_accumulation_steps", "1", "--max_length", "32",
                      "--device", "cpu", "--save_dir", str(tmp_path)])
    record = json.loads(next(tmp_path.rglob("run.json")).read_text())
    assert record["config"]["schedule"] == "joint" and not record["config"]["alternate"]
    assert [entry["objective"] for entry in record["history"]] == [JOINT] * record["metrics"]["max_steps"]


@pytest.mark.parametrize("kind", ["DEEPSPEED", "FSDP"])
def test_schedule_joint_with_a_dual_optimizer_refuses_deepspeed_and_fsdp(kind, tmp_path):
    from types import SimpleNamespace

    from accelerate.utils import DistributedType

    from LLM import main_forget
    from LLM.options import parse_with_config
    from LLM.unlearn import UnlearnConfig, unlearn, validate_unlearn_args

    args = parse_with_config(main_forget.build_parser(), ["--model_path", "m", "--forget_loss", "ME+GD",
                                                          "--optim_cfg", "dual_adam", "--schedule", "joint"])
    loss = validate_unlearn_args(args)
    accelerator = SimpleNamespace(distributed_type=DistributedType[kind])
    with pytest.raises(UsageError, match=f"--schedule joint: --optim_cfg dual_adam keeps the forget and retain "
                                         f"gradients apart in p.grad, which {DistributedType[kind].value} owns"):
        unlearn(UnlearnConfig.from_args(args, "cpu"), accelerator, loss, [], [], "m", "m", tmp_path, None)
    assert not any(tmp_path.iterdir())
