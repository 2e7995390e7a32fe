"""SFR-on unlearning (--unlearn SFRon) with its Fisher-ratio mask and adaptive forget loss.

    python main_random_sfron.py --unlearn SFRon --num_indexes_to_replace 4500 --sfron_alpha ALPHA \\
        --sfron_iters ITERS --unlearn_lr LR --retain_lr 0.01 --model_path MODEL --save_dir OUT --optim dual
"""
from common.errors import cli_main
from ImageClassification.arg_parser import parse_config
from ImageClassification.pipeline import run_unlearning


@cli_main
def main(argv=None):
    return run_unlearning(parse_config(argv))


if __name__ == "__main__":
    main()
