"""Random-label unlearning (RL); SalUn when --mask_path gives a saliency mask.

    python main_random.py --unlearn RL --unlearn_epochs 10 --unlearn_lr 0.018 --retain_lr 0.01 \\
        --num_indexes_to_replace 4500 --model_path MODEL --save_dir OUT --mask_path mask/with_0.5.pt --optim dual
"""
from common.errors import cli_main
from ImageClassification.arg_parser import parse_config
from ImageClassification.pipeline import run_unlearning


@cli_main
def main(argv=None):
    return run_unlearning(parse_config(argv))


if __name__ == "__main__":
    main()
