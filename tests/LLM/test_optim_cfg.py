"""The 8-bit ``--optim_cfg`` choices (bitsandbytes): embeddings in 32 bits, a run through main_forget, bnb missing."""
from __future__ import annotations

import json
import sys

import pytest
import torch
from safetensors.torch import load_file

from dualoptim.optimizers import set_objective
from LLM import main_forget
from LLM.models import load_causal_lm
from LLM.trainer import build_optimizer

EIGHT_BIT = ["adam_8bit", "dual_adam_8bit"]


@pytest.mark.parametrize("optim_cfg", EIGHT_BIT)
def test_8bit_optimizers_keep_embedding_states_32bit(tiny_model, optim_cfg):
    pytest.importorskip("bitsandbytes")
    model = load_causal_lm(str(tiny_model))
    optimizer = build_optimizer(optim_cfg, model, 1e-3, 2e-3, 0.01)
    set_objective(optimizer, "forget")
    ids = torch.tensor([[1, 2, 3, 4, 5]])
    model(input_ids=ids, labels=ids).loss.backward()
    optimizer.step()

    def moment_dtypes(param):
        return {value.dtype for key, value in optimizer.state[param].items() if key.startswith(("state1", "state2"))}

    # both hold 300 x 32 = 9600 elements, above bitsandbytes' 4096-element 8-bit threshold
    assert moment_dtypes(model.model.embed_tokens.weight) == {torch.float32}
    assert moment_dtypes(model.lm_head.weight) == {torch.uint8}


def forget_run(tmp_path, tofu_dir, tiny_model, optim_cfg):
    save = tmp_path / optim_cfg
    main_forget.main(["--model_path", str(tiny_model), "--data_path", str(tofu_dir), "--split", "forget01",
                      "--task_list", "1", "--forget_loss", "GA+GD", "--optim_cfg", optim_cfg, "--alternate",
                      "--retain_freq", "2", "--lr", "1e-3", "--forget_lr", "3e-3", "--num_epochs", "2",
                      "--batch_size", "2", "--gradient_accumulation_steps", "1", "--max_length", "32",
                      "--seed", "0", "--save_dir", str(save), "--device", "cpu"])
    out = save / "1" / "unlearn_times_1"
    return json.loads((out / "run.json").read_text()), load_file(str(out / "checkpoint-last" / "model.safetensors"))


def test_dual_adam_8bit_unlearns_like_dual_adam_up_to_quantisation(tmp_path, tofu_dir, tiny_model):
    pytest.importorskip("bitsandbytes")
    run_8bit, weights_8bit = forget_run(tmp_path, tofu_dir, tiny_model, "dual_adam_8bit")
    run_32bit, weights_32bit = forget_run(tmp_path, tofu_dir, tiny_model, "dual_adam")
    assert run_8bit["config"]["optim_cfg"] == "dual_adam_8bit"
    assert [h["objective"] for h in run_8bit["history"]] == ["forget", "retain", "retain"] * 2
    start = load_file(str(tiny_model / "model.safetensors"))
    for name, initial in start.items():
        update_8bit, update_32bit = (weights_8bit[name] - initial).flatten(), (weights_32bit[name] - initial).flatten()
        # Same schedule, objectives and learning rates: the updates point the same way but for the
        # 8-bit rounding of lm_head's moments (its effect on the other tensors is far smaller).
        # A forget step at the retain lr, or on the retain moments, drops some of these below 0.5.
        cosine = torch.nn.functional.cosine_similarity(update_8bit, update_32bit, dim=0).item()
        assert cosine > (0.95 if name == "lm_head.weight" else 0.99), (name, cosine)


@pytest.mark.parametrize("optim_cfg", EIGHT_BIT)
def test_missing_bitsandbytes_is_one_line_error_before_anything_is_written(
        monkeypatch, tmp_path, tofu_dir, tiny_model, run_error, optim_cfg):
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # makes `import bitsandbytes` fail
    monkeypatch.delitem(sys.modules, "dualoptim.optimizers_8bit", raising=False)
    save = tmp_path / "out"
    err = run_error(main_forget.main, ["--model_path", str(tiny_model), "--data_path", str(tofu_dir),
                                       "--split", "forget01", "--optim_cfg", optim_cfg, "--alternate",
                                       "--save_dir", str(save), "--device", "cpu"])
    assert f"--optim_cfg {optim_cfg}: needs the bitsandbytes package" in err
    assert not save.exists()
