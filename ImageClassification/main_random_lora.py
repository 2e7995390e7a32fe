"""Unlearning through LoRA adapters of the original model (the research code's main_random_lora.py).

    python main_random_lora.py --arch resnet18_lora --rank_config ranks.json --unlearn RL \\
        --unlearn_epochs 10 --unlearn_lr 0.01 --num_indexes_to_replace 4500 --model_path MODEL --save_dir OUT
"""
from common.errors import cli_main
from ImageClassification.lora import LoraAdapters, parse_lora_config
from ImageClassification.pipeline import run_unlearning


@cli_main
def main(argv=None):
    config = parse_lora_config(argv)
    return run_unlearning(config, LoraAdapters.from_file(config.rank_config))


if __name__ == "__main__":
    main()
