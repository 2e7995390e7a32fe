"""``DualOptimTrainerMixin``: a Hugging Face Trainer steps DualOptim as the project's own LLM loop does."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from dualoptim import DecoupledAdamW
from LLM.trainer import build_optimizer, build_scheduler, make_accelerator, prepare_for_training, run_schedule
import hf_mixin_run as run

REPO = Path(__file__).resolve().parents[2]


def project_loop(model_path, tofu_dir):
    """The project's loop (``--optim_cfg dual_adam --alternate``) on the same micro-batches."""
    model = AutoModelForCausalLM.from_pretrained(model_path)
    accelerator = make_accelerator("cpu")
    optimizer = build_optimizer("dual_adam", model, run.LR, run.FORGET_LR, run.WEIGHT_DECAY)
    scheduler = build_scheduler(optimizer, run.STEPS, run.WARMUP)
    model, optimizer = prepare_for_training(accelerator, model, optimizer, run.BATCH, run.ACCUMULATION, 1.0)
    history = run_schedule(accelerator, model, optimizer, scheduler, run.schedule(model_path, tofu_dir),
                           lambda objective, batch: run.objective_loss(model, objective, batch[objective]), 1.0)
    assert [step["objective"] for step in history] == ["forget", "retain", "forget", "retain"]
    return accelerator.unwrap_model(model).state_dict()


def test_mixin_trainer_gives_the_project_loops_weights_with_accumulation(tiny_model, tofu_dir, tmp_path, one_thread):
    trainer = run.train_with_mixin(tiny_model, tofu_dir, tmp_path / "trainer")
    assert isinstance(trainer.optimizer.optimizer if hasattr(trainer.optimizer, "optimizer") else trainer.optimizer,
                      DecoupledAdamW)
    state = trainer.optimizer.state[next(trainer.model.parameters())]
    assert {"exp_avg_forget", "exp_avg_retain"} <= set(state)  # one moment set per objective, both used
    expected = project_loop(tiny_model, tofu_dir)
    start = AutoModelForCausalLM.from_pretrained(tiny_model).state_dict()
    got = trainer.model.state_dict()
    assert any(not torch.equal(start[k], got[k]) for k in start)
    for key, value in expected.items():
        torch.testing.assert_close(got[key], value, rtol=1e-5, atol=1e-6, msg=key)


def test_a_one_process_accelerate_launch_gives_the_same_weights(tiny_model, tofu_dir, tmp_path, one_thread):
    out = tmp_path / "launched.pt"
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    result = subprocess.run([sys.executable, "-m", "accelerate.commands.launch", "--cpu", "--num_processes", "1",
                             "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
                             str(REPO / "tests" / "LLM" / "hf_mixin_run.py"), str(tiny_model), str(tofu_dir), str(out)],
                            capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    launched = torch.load(out, weights_only=True)
    in_process = run.train_with_mixin(tiny_model, tofu_dir, tmp_path / "trainer").model.state_dict()
    for key, value in in_process.items():
        torch.testing.assert_close(launched[key], value, rtol=1e-5, atol=1e-6, msg=key)


def test_a_step_that_mixes_objectives_or_an_untagged_batch_is_refused(tiny_model, tofu_dir, tmp_path, one_thread):
    items = [{**batch[objective], "objective": objective}
             for _, objective, batches in run.schedule(tiny_model, tofu_dir) for batch in batches]
    items[0], items[2] = items[2], items[0]  # step 1: a retain micro-batch, then a forget one
    trainer = run.DualTwoLossTrainer(
        model=AutoModelForCausalLM.from_pretrained(tiny_model), data_collator=lambda batch: batch[0],
        args=run.TrainingArguments(output_dir=str(tmp_path), per_device_train_batch_size=1, max_steps=2,
                                   gradient_accumulation_steps=2, report_to=[], use_cpu=True,
                                   remove_unused_columns=False, save_strategy="no", disable_tqdm=True),
        train_dataset=run.MicroBatches(items))
    with pytest.raises(ValueError, match="optimizer step 1 accumulates retain and forget micro-batches"):
        trainer.train()
    untagged = {k: v for k, v in items[1].items() if k != "objective"}
    with pytest.raises(ValueError, match="has no 'objective' entry"):
        trainer.objective_of(untagged)
    with pytest.raises(ValueError, match="for the whole micro-batch"):
        trainer.objective_of({**untagged, "objective": ["forget", "retain"]})
    assert trainer.objective_of({**untagged, "objective": ("retain", "retain")}) == "retain"
