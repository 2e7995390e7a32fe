"""The frozen run config of every image-generation entry script: built from the parsed flags, typed, never
changed, and recorded in ``run.json`` with the same keys, in the same order, as before the configs existed."""
from __future__ import annotations

import dataclasses

import pytest

from ImageGeneration.DDPM import generate_mask, main_forget, main_train, sample, train_classifier
from ImageGeneration.DDPM.run_config import (ForgetRunConfig, JudgeRunConfig, MaskRunConfig, SampleRunConfig,
                                             TrainRunConfig)
from ImageGeneration.DiT import generate_mask as dit_mask, main_forget as dit_forget, sample as dit_sample
from ImageGeneration.DiT.run_config import DiTForgetRunConfig, DiTMaskRunConfig, DiTSampleRunConfig

SEED_DEVICE = ["seed", "deterministic", "device", "gpu", "trust_checkpoint"]
RUN_CONTROL = ["resume", "allow_nonfinite", "report_to", "logging_steps"]
#: ``run.json``'s ``config`` keys of each script as written before the frozen configs (commit e3c9c50).
CASES = {
    "DDPM main_train": (main_train, TrainRunConfig, [], {"dataset": "digits"},
                        ["exp_root", "config", "mode", "label_to_forget", "dataset", "data_path", *RUN_CONTROL,
                         *SEED_DEVICE]),
    "DDPM generate_mask": (generate_mask, MaskRunConfig, ["--ckpt_folder", "x", "--threshold", "0.5", "0.25"],
                           {"mode": "salun", "dataset": "digits"},
                           ["mode", "ckpt_folder", "config", "label_to_forget", "threshold", "cond_scale",
                            "fim_timesteps", "n_chunks", "save_dir", "dataset", "data_path", *SEED_DEVICE]),
    "DDPM sample": (sample, SampleRunConfig, ["--ckpt_folder", "x"], {"dataset": "digits"},
                    ["config", "dataset", "ckpt_folder", "mode", "classes_to_generate", "n_samples_per_class",
                     "cond_scale", "sample_type", "timesteps", "eta", *SEED_DEVICE]),
    "DDPM train_classifier": (train_classifier, JudgeRunConfig, [], {"dataset": "digits"},
                              ["dataset", "data_path", "arch", "image_size", "pretrained_weights", "from_scratch",
                               "lr", "batch_size", "n_epochs", "save_dir", "allow_nonfinite", *SEED_DEVICE]),
    "DDPM main_forget": (main_forget, ForgetRunConfig, ["--ckpt_folder", "x", "--mode", "sa"],
                         {"dataset": "digits", "unlearn_loss": "sa"},
                         ["exp_root", "config", "ckpt_folder", "mode", "label_to_forget", "forget_alpha",
                          "decay_forget_alpha", "remain_alpha", "unlearn_loss", "method", "mask_path",
                          "keep_snapshots",  # the one flag added since (#28's trajectories)
                          "optim", "dual", "forget_lr", "amp", "amp_dtype", "dataset", "data_path", *RUN_CONTROL,
                          *SEED_DEVICE]),
    "DiT generate_mask": (dit_mask, DiTMaskRunConfig, ["--forget-class", "1", "2"], {},
                          ["method", "mask_path", "forget_class", "thresholds", "model", "ckpt", "vae", "data_path",
                           "n_iters", "batch_size", "num_workers", "recompute", "vb_loss", *SEED_DEVICE]),
    "DiT sample": (dit_sample, DiTSampleRunConfig, ["--class-labels", "3", "4"], {},
                   ["model", "ckpt", "transformer_path", "vae", "class_labels", "n_samples_per_class", "batch_size",
                    "cfg_scale", "num_sampling_steps", "sample_type", "cfg_channels", "eta", "sample_dir",
                    *SEED_DEVICE]),
    "DiT main_forget": (dit_forget, DiTForgetRunConfig, ["--data-path", "x", "--forget-class", "1"], {},
                        ["data_path", "results_dir", "model", "ckpt", "vae", "n_iters", "batch_size", "lr",
                         "num_workers", "log_every", "ckpt_every", "snapshot_every", "forget_class", "mode", "method",
                         "unlearn_loss", "grad_clip", "forget_alpha", "decay_forget_alpha", "remain_alpha",
                         "mask_path", "optim", "dual", "forget_lr", "amp", "amp_dtype", "vb_loss", *RUN_CONTROL,
                         *SEED_DEVICE]),
}


def build(config_class, args, resolved):
    if config_class is ForgetRunConfig:  # resolves --unlearn_loss itself; the dataset is the checkpoint's
        return config_class.from_args(args, resolved["dataset"])
    return config_class.from_args(args, **resolved)


@pytest.mark.parametrize("script", list(CASES))
def test_each_script_freezes_its_flags_and_records_the_same_keys(script):
    module, config_class, argv, resolved, keys = CASES[script]
    args = module.parse_args(argv)
    parsed = dict(vars(args))
    run = build(config_class, args, resolved)
    assert vars(args) == parsed  # building reads the flags, changes none
    record = run.record()
    assert list(record) == keys == list(parsed)  # run.json's keys, in the parser's order
    assert record == {**parsed, **resolved}
    for name, value in parsed.items():
        if isinstance(value, list):  # nargs flags: a tuple in the frozen config, the parsed list in the record
            assert getattr(run, name) == tuple(value) and record[name] == value
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(run, keys[0], getattr(run, keys[0]))
    with pytest.raises(dataclasses.FrozenInstanceError):
        run.not_a_flag = 1  # nor can a setting be added
    args.not_a_flag = 1
    with pytest.raises(TypeError, match="not_a_flag"):
        build(config_class, args, resolved)
