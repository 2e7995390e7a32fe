"""Unlearning baselines and SCRUB: --unlearn retrain | FT | GA | SCRUB | l1-sparse | boundary_shrink | ...

    python main_forget.py --unlearn SCRUB --num_indexes_to_replace 4500 --unlearn_epochs 10 \\
        --unlearn_lr LR --retain_lr 0.01 --model_path MODEL --save_dir OUT --optim dual
"""
from common.errors import cli_main
from ImageClassification.arg_parser import parse_config
from ImageClassification.pipeline import run_unlearning


@cli_main
def main(argv=None):
    return run_unlearning(parse_config(argv))


if __name__ == "__main__":
    main()
