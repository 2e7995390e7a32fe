"""The research READMEs' commands run with the scripts here: flags, defaults and configs.

Each command of CityU-MLO/DualOptim's ``ImageGeneration/DDPM/README.md`` and ``DiT/README.md`` is
listed with its script swapped for ours (the table in ``ImageGeneration/README.md``) and its paths
for placeholders; the entry points run end to end in the pipeline tests.
"""
from __future__ import annotations

import shlex

import pytest

from ImageGeneration.DDPM import (
    classifier_evaluation, evaluator, generate_mask, main_forget, main_train, sample, save_base_dataset,
    train_classifier)
from ImageGeneration.DDPM.config import load_config
from ImageGeneration.DiT import generate_mask as dit_generate_mask
from ImageGeneration.DiT import main_forget as dit_forget
from ImageGeneration.DiT import sample as dit_sample
from ImageGeneration.DiT import sample_ddp as dit_sample_ddp

SFRON = ("--config cifar10_sfron.yml --ckpt_folder CKPT --label_to_forget 0 --mode sfron --forget_alpha {alpha} "
         "--decay_forget_alpha --remain_alpha 1.0 --method ron --unlearn_loss adaga --mask_path MASK")
DIT_FORGET = ("--model DiT-XL/2 --data-path DATA --batch-size 1 --ckpt CKPT --n-iters {iters} --snapshot-every 50 "
              "--lr {lr} --forget-class 207 --method ron --unlearn-loss ga --forget-alpha {alpha} "
              "--decay-forget-alpha --remain-alpha 1.0 --mask-path MASK")

RESEARCH_COMMANDS = [  # (research script, our module, arguments as the README writes them)
    ("train.py", main_train, "--config cifar10_pretrain.yml --mode pretrain"),
    ("train.py", main_train, "--config cifar10_pretrain.yml --mode retrain --label_to_forget 0"),
    ("train.py", generate_mask, "--config cifar10_fisher.yml --ckpt_folder CKPT --label_to_forget 0 "
                                "--mode generate_fisher"),
    ("generate_fisher_mask.py", generate_mask, "--ckpt_folder CKPT/mask_0 --threshold 1.0"),
    ("train.py", main_forget, SFRON.format(alpha="10.0")),
    ("train.py", main_forget, SFRON.format(alpha="1.0") + " --dual --forget_lr 1e-4"),
    ("sample.py", sample, "--config cifar10_sample.yml --ckpt_folder CKPT --mode sample_classes "
                          "--n_samples_per_class 500"),
    ("fim.py", generate_mask, "--mode sa_fim --config cifar10_fim.yml --ckpt_folder CKPT --n_chunks 20"),
    ("train.py", main_forget, "--config cifar10_sa.yml --ckpt_folder CKPT --label_to_forget 0 --mode sa"),
    ("train.py", generate_mask, "--config cifar10_saliency_unlearn.yml --ckpt_folder CKPT --label_to_forget 0 "
                                "--mode generate_mask"),
    ("train.py", main_forget, "--config cifar10_saliency_unlearn.yml --ckpt_folder CKPT --label_to_forget 0 "
                              "--mode salun --mask_path MASK --remain_alpha 1e-3 --unlearn_loss rl"),
    ("sample.py", sample, "--config cifar10_sample.yml --ckpt_folder CKPT --mode sample_fid "
                          "--n_samples_per_class 5000 --classes_to_generate 'x0'"),
    ("save_base_dataset.py", save_base_dataset, "--dataset cifar10 --label_to_forget 0"),
    ("evaluator.py", evaluator, "CKPT/fid_samples_without_label_0_guidance_2.0 cifar10_without_label_0"),
    ("train_classifier.py", train_classifier, "--dataset cifar10"),
    ("sample.py", sample, "--config cifar10_sample.yml --ckpt_folder CKPT --mode sample_classes "
                          "--classes_to_generate \"0\" --n_samples_per_class 500"),
    ("classifier_evaluation.py", classifier_evaluation, "--sample_path CKPT/class_samples/0 --dataset cifar10 "
                                                        "--label_of_forgotten_class 0"),
    ("DiT/generate_fisher.py", dit_generate_mask, "--model DiT-XL/2 --data-path DATA --batch-size 1 --ckpt CKPT "
                                                  "--n-iters 2000 --forget-class 207 --mask-path ./mask"),
    ("DiT/generate_mask.py", dit_generate_mask, "--mask-path ./mask --forget-class 207 --thresholds 0.5 1 3 5 10"),
    ("DiT/forget.py", dit_forget, DIT_FORGET.format(iters=600, lr="1e-4", alpha="1e-3")),
    ("DiT/forget.py", dit_forget, DIT_FORGET.format(iters=500, lr="5e-5", alpha="1") + " --dual --forget_lr 5e-5"),
]


@pytest.mark.parametrize("research_script,module,command", RESEARCH_COMMANDS,
                         ids=[f"{c[0]}:{i}" for i, c in enumerate(RESEARCH_COMMANDS)])
def test_research_readme_command_is_accepted(research_script, module, command):
    args = module.parse_args(shlex.split(command))
    config = getattr(args, "config", None)
    if config and config != "cifar10_fim.yml":  # the README's fim config is not in the research code; unread here
        kind = config.removeprefix("cifar10_").removesuffix(".yml")  # each config holds its kind's sections
        assert load_config(config, None, kind).data.dataset == "cifar10"


@pytest.mark.parametrize("module,argv,defaults", [
    (main_train, [], {"mode": "pretrain", "label_to_forget": 0, "seed": 1234, "exp_root": "."}),
    (main_forget, ["--ckpt_folder", "C"], {"forget_alpha": 1.0, "remain_alpha": 1.0, "forget_lr": 1e-4,
                                           "label_to_forget": 0, "seed": 1234, "dual": False,
                                           "decay_forget_alpha": False, "mask_path": None}),
    (generate_mask, ["--ckpt_folder", "C"], {"cond_scale": 2.0, "label_to_forget": 0}),
    (sample, ["--ckpt_folder", "C"], {"n_samples_per_class": 1000, "cond_scale": 2.0, "timesteps": 1000,
                                      "eta": 1.0, "sample_type": "generalized", "seed": 1234}),
    (save_base_dataset, ["--dataset", "cifar10"], {"label_to_forget": 0}),
    (train_classifier, [], {"batch_size": 128, "n_epochs": 10}),
    (classifier_evaluation, ["--sample_path", "S"], {"label_of_forgotten_class": 0, "batch_size": 64}),
    (dit_generate_mask, ["--forget-class", "1"], {"n_iters": 2000, "batch_size": 1, "seed": 0, "model": "DiT-XL/2",
                                                  "thresholds": [0.5, 1, 3, 5, 10], "method": "sfron"}),
    (dit_forget, ["--data-path", "D", "--forget-class", "1"],
     {"n_iters": 1000, "batch_size": 1, "lr": 1e-5, "seed": 0, "log_every": 100, "ckpt_every": 1000,
      "snapshot_every": 1000, "unlearn_loss": "ga", "grad_clip": 1.0, "forget_alpha": 1.0, "remain_alpha": 1.0,
      "forget_lr": 1e-4, "results_dir": "results", "model": "DiT-XL/2", "num_workers": 4}),
    (dit_sample, ["--class-labels", "207"], {"vae": "ema", "cfg_scale": 4.0, "num_sampling_steps": 250, "seed": 0,
                                             "model": "DiT-XL/2", "sample_type": "learned_range", "cfg_channels": 3}),
    (dit_sample_ddp, [], {"vae": "ema", "sample_dir": "samples", "per_proc_batch_size": 32, "num_fid_samples": 50_000,
                          "exclude_class": -1, "only_class": -1, "cfg_scale": 1.5, "num_sampling_steps": 250,
                          "global_seed": 0, "tf32": True, "model": "DiT-XL/2", "sample_type": "learned_range",
                          "cfg_channels": 3}),
])
def test_defaults_are_the_research_code_defaults(module, argv, defaults):
    args = vars(module.parse_args(argv))
    assert {key: args[key] for key in defaults} == defaults
