"""The original's LLM command forms: ``--config-name=FILE``, ``key=value`` overrides and ``forget.py``."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from LLM import eval as llm_eval
from LLM import main_forget
from LLM.options import CONFIG_DIR, parse_with_config

REPO = Path(__file__).resolve().parents[2]
# the key=value part of the original's scripts/tofu/dualoptim.sh lines ($COMMON, its variables filled in;
# fix_ref_model is never set there, so hydra gets an empty value)
COMMON = ("use_LoRA=false forget_coeff=1.0 regularization_coeff=1.0 lr=1e-5 forget_lr=1e-5 split=forget10 "
          "forget_loss=ME+GD num_epochs=5 mask=true fix_ref_model= save_root=results/optim_dual_adam "
          "save_checkpoint=true alternate=true optim_cfg=dual_adam retain_freq=5").split()


def forget_args(argv):
    args = parse_with_config(main_forget.build_parser(), argv)
    main_forget.validate(args)
    return args


def test_the_original_scripts_lines_set_the_flags_of_the_same_names(monkeypatch):
    monkeypatch.setenv("TASK_LIST", "1")
    hydra = forget_args(["--config-name=phi1-5_tofu.yaml", "task_id=1", "save_steps=last", *COMMON])
    flags = forget_args(["--config", str(CONFIG_DIR / "phi1-5_tofu.yaml"), "--task_id", "1", "--save_steps", "last",
                         "--forget_coeff", "1.0", "--regularization_coeff", "1.0", "--lr", "1e-5", "--forget_lr",
                         "1e-5", "--split", "forget10", "--forget_loss", "ME+GD", "--num_epochs", "5", "--mask",
                         "--save_root", "results/optim_dual_adam", "--alternate", "--optim_cfg", "dual_adam",
                         "--retain_freq", "5"])
    assert vars(hydra) == vars(flags)
    assert (hydra.lr, hydra.alternate, hydra.fix_ref_model, hydra.mask, hydra.retain_freq) == \
        (1e-5, True, False, True, 5)
    assert hydra.save_dir == ("results/optim_dual_adam/phi1.5/forget10_task_1/ME+GD/"
                              "epoch5_lr_1e-05_1e-05_freq_1_5_FixRefFalse_maskTrue_1.0_1.0")
    # eval.py, given the same keys, evaluates the folder forget.py wrote (as the original's eval.py)
    evaluated = llm_eval.parse_args(["--config-name=phi1-5_tofu.yaml", "task_id=1", "eval_unlearn_step=last", *COMMON])
    assert evaluated.unlearn_dir == str(main_forget.task_dir(hydra, 1)) and evaluated.eval_unlearn_step == "last"
    assert evaluated.model_family == "phi1.5" and evaluated.split == "forget10" and evaluated.max_length == 256


def test_overrides_replace_the_config_values_flags_replace_overrides_and_nested_keys_map():
    args = forget_args(["--config-name=llama_tofu.yaml", "mask=false", "LoRA.r=16", "+seed=7", "lr=2e-5",
                        "--lr", "3e-5"])
    assert args.config == str(CONFIG_DIR / "llama2-7b_tofu.yaml")  # the original's config name
    assert (args.mask, args.LoRA_r, args.seed, args.lr) == (False, 16, 7, 3e-5)
    assert forget_args(["--config-name", "phi1-5_tofu", "--data_path", "a=b"]).data_path == "a=b"  # a value, not a key


@pytest.mark.parametrize("argv, message", [
    (["--config-name=phi1-5_tofu.yaml", "nosuch=1"], "error: nosuch=1: unknown key (no --nosuch flag)"),
    (["--config-name=phi1-5_tofu.yaml", "save_checkpoint=false"],
     "error: save_checkpoint=false: has no equivalent here (only save_checkpoint=true)"),
    (["--config-name=phi1-5_tofu.yaml", "alternate=maybe"], "error: alternate=maybe: expected true or false"),
    (["--config-name=phi1-5_tofu.yaml", "lr=fast"], "argument --lr: expected a number > 0, got 'fast'"),
    (["--config-name=nope.yaml"], "error: --config-name=nope.yaml: no such file here or in "),
])
def test_hydra_forms_fail_with_one_line(run_error, argv, message):
    error = run_error(main_forget.main, argv)
    assert error.startswith(message) or message in error


def test_forget_py_is_the_original_name_of_main_forget(tmp_path):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    result = subprocess.run([sys.executable, "forget.py", "--config-name=phi1-5_tofu.yaml", "task_id=1", "nosuch=1"],
                            cwd=REPO / "LLM", env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == ["error: nosuch=1: unknown key (no --nosuch flag); see --help for "
                                                  "the flags, which keep the original's config key names"]


def test_config_values_are_converted_as_their_flags_before_anything_loads(tmp_path):
    """Reproduced: ``alternate: "false"`` was recorded as the string "false" and the run alternated."""
    config = tmp_path / "c.yaml"
    config.write_text('alternate: "false"\nlr: 2e-5\nforget_freq: "3"\nuse_LoRA: true\n')
    args = parse_with_config(main_forget.build_parser(), ["--config", str(config), "--model_path", "m"])
    assert args.alternate is False and args.use_LoRA is True
    assert args.lr == 2e-5 and type(args.lr) is float and args.forget_freq == 3
    config.write_text('alternate: "true"\n')
    assert parse_with_config(main_forget.build_parser(), ["--config", str(config), "--model_path", "m"]).alternate
