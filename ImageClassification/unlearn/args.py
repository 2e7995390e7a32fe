"""Command-line flags of the unlearning methods.

The general flags (``--unlearn``, ``--unlearn_lr``, ``--retain_lr``,
``--optim``, ``--unlearn_epochs``, ...) belong to
:mod:`ImageClassification.arg_parser`; this module adds only the flags a
particular method reads, with the research code's names and defaults.
"""
from __future__ import annotations

import argparse

from common.errors import fraction, non_negative_float, non_negative_int, positive_int


def add_method_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the method-specific flags to ``parser`` (in a group of their own) and return it."""
    group = parser.add_argument_group("unlearning-method options")
    group.add_argument("--alpha", default=0.2, type=non_negative_float,
                       help="FT_l1/FT_prune/GA_l1: l1 weight; fisher/wfisher/fisher_new: noise/perturbation scale")
    group.add_argument("--no-l1-epochs", dest="no_l1_epochs", default=0, type=non_negative_int,
                       help="FT_l1/FT_prune: final epochs trained without the l1 term")
    group.add_argument("--accum_steps", default=1, type=positive_int,
                       help="retrain: gradient-accumulation steps per optimizer step")
    group.add_argument("--scrub_alpha", default=0.5, type=non_negative_float,
                       help="SCRUB: weight of the retain-set KL(teacher || student) term")
    group.add_argument("--scrub_gamma", default=1.0, type=non_negative_float,
                       help="SCRUB: weight of the retain-set cross-entropy term")
    group.add_argument("--sfron_alpha", default=25, type=non_negative_float,
                       help="SFR-on: initial weight of the adaptive gradient-ascent forget loss")
    group.add_argument("--sfron_freq", default=5, type=positive_int,
                       help="SFR-on: one forget step every this many retain steps")
    group.add_argument("--sfron_iters", default=1500, type=positive_int,
                       help="SFR-on: number of retain steps (iterations)")
    group.add_argument("--sfron_checkpoint_every", default=0, type=non_negative_int,
                       help="SFR-on: also save the model as checkpoint_step{s}.pt every this many retain steps, for "
                            "metrics along the run (0: never; ours, the research code keeps the last model only)")
    group.add_argument("--sfron_ema_beta", default=1.0, type=fraction,
                       help="SFR-on: fast-slow weight update theta <- beta*theta + (1-beta)*theta_prev "
                            "(the research code fixes beta=1, i.e. off)")
    group.add_argument("--mask_ratio", default=0.5, type=fraction,
                       help="RL_proximal: share of the weights returned to the epoch's starting values after "
                            "the first step, falling linearly to 0 over the run")
    group.add_argument("--rate", default=0.95, type=fraction,
                       help="GA_prune/GA_prune_bi: share of the remaining conv weights pruned each time; "
                            "FT_prune_bi: share pruned in total")
    group.add_argument("--pruning_times", default=1, type=positive_int,
                       help="GA_prune: train-prune-rewind states")
    group.add_argument("--prune_type", default="rewind_lt", choices=("lt", "pt", "rewind_lt"),
                       help="GA_prune: rewind to the start of --rewind_epoch (rewind_lt) or to the given model")
    group.add_argument("--random_prune", action="store_true",
                       help="GA_prune/GA_prune_bi/FT_prune_bi: prune at random instead of the smallest |w|")
    group.add_argument("--rewind_epoch", default=0, type=non_negative_int,
                       help="GA_prune: epoch whose starting weights (and learning rate) the later states rewind to")
    return parser
