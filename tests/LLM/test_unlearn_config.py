"""LLM.unlearn.UnlearnConfig: the frozen, typed settings of one unlearning run, built once by the entry script."""
import dataclasses

import pytest

from LLM import main_forget
from LLM.options import PromptTemplate, parse_with_config
from LLM.unlearn import UnlearnConfig, validate_unlearn_args

ARGV = ["--model_path", "m", "--forget_loss", "ME+GD", "--optim_cfg", "dual_adam", "--alternate",
        "--lr", "2e-5", "--forget_lr", "3e-5", "--save_steps", "4", "--question_start_tag", "Q: ",
        "--question_end_tag", "\n", "--answer_tag", "A: "]


def test_from_args_completes_precision_freezes_and_keeps_every_flag():
    args = parse_with_config(main_forget.build_parser(), ARGV)
    validate_unlearn_args(args)
    config = UnlearnConfig.from_args(args, "cpu")
    # --dtype and the attention implementation are completed for the device, in the record too
    assert (config.dtype, config.attn_implementation) == ("float32", None)
    assert config.flags == vars(args) and list(config.flags)[-1] == "attn_implementation"
    assert (config.lr, config.forget_lr, config.optim_cfg, config.alternate, config.save_steps) == \
        (2e-5, 3e-5, "dual_adam", True, "4")
    assert config.template == PromptTemplate("Q: ", "\n", "A: ")
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.lr = 1.0


@pytest.mark.parametrize("schedule, optim_cfg, alternate, split_joint", [
    (["--alternate"], "dual_adam", True, False),
    (["--schedule", "alternate"], "dual_adam", True, False),
    (["--schedule", "joint"], "dual_adam", False, True),
    (["--schedule", "joint"], "adam", False, False),  # one state: the plain joint step
    ([], "adam", False, False)])
def test_schedule_joint_splits_joint_steps_for_a_dual_optimizer(schedule, optim_cfg, alternate, split_joint):
    argv = [a for a in ARGV if a != "--alternate"]
    argv[argv.index("--optim_cfg") + 1] = optim_cfg
    args = parse_with_config(main_forget.build_parser(), argv + schedule)
    validate_unlearn_args(args)
    config = UnlearnConfig.from_args(args, "cpu")
    assert (config.alternate, config.split_joint) == (alternate, split_joint)
