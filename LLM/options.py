"""Command-line options shared by the LLM scripts: ``--config`` YAML defaults and prompt templates.

The research code is driven by hydra configs; we keep its key names as argparse
flags.  ``--config FILE.yaml`` supplies defaults for any flag (a model family's
model path and prompt template, a benchmark's hyperparameters); flags given on
the command line win over the file.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import yaml

from common.errors import UsageError

CONFIG_DIR = Path(__file__).resolve().parent / "config"
MODEL_CONFIG_FILE = CONFIG_DIR / "model_config.yaml"


@dataclass(frozen=True)
class PromptTemplate:
    """How a question/answer pair is laid out for a model family.

    The prompt is ``question_start_tag + question + question_end_tag`` and the
    target ``answer_tag + answer``; losses are taken on the target only.
    """

    question_start_tag: str
    question_end_tag: str
    answer_tag: str

    def prompt(self, question: str) -> str:
        return self.question_start_tag + question + self.question_end_tag

    def target(self, answer: str) -> str:
        return self.answer_tag + answer


def model_families() -> Dict[str, dict]:
    """The model families of ``config/model_config.yaml`` (name -> model path and template)."""
    with open(MODEL_CONFIG_FILE, encoding="utf-8") as handle:
        return yaml.safe_load(handle)


def read_yaml_config(path: str, flag: str = "--config") -> dict:
    """Load a flat YAML mapping, with one-line errors for missing or malformed files."""
    file = Path(path)
    if not file.is_file():
        raise UsageError(f"{flag} {path}: file not found")
    try:
        with open(file, encoding="utf-8") as handle:
            values = yaml.safe_load(handle)
    except yaml.YAMLError as err:
        raise UsageError(f"{flag} {path}: not valid YAML ({' '.join(str(err).split())})") from None
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise UsageError(f"{flag} {path}: expected a mapping of option names to values")
    return values


def add_model_args(parser: argparse.ArgumentParser) -> None:
    """``--config``, ``--model_family``, ``--model_path`` and the prompt-template flags."""
    parser.add_argument("--config", type=str, default=None,
                        help="YAML file of defaults for any of these flags (command-line flags win)")
    parser.add_argument("--model_family", type=str, default="plain",
                        help=f"prompt template / default model ({', '.join(model_families())})")
    parser.add_argument("--model_path", type=str, default=None,
                        help="Hugging Face causal LM (hub id or local folder); default: the family's model")
    parser.add_argument("--question_start_tag", type=str, default=None, help="overrides the family template")
    parser.add_argument("--question_end_tag", type=str, default=None, help="overrides the family template")
    parser.add_argument("--answer_tag", type=str, default=None, help="overrides the family template")


def parse_with_config(parser: argparse.ArgumentParser, argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """Parse ``argv``; values from ``--config`` become defaults that explicit flags override."""
    pre, _ = parser.parse_known_args(argv)
    config_path = getattr(pre, "config", None)
    if config_path:
        values = read_yaml_config(config_path)
        known = {action.dest for action in parser._actions}
        unknown = sorted(set(values) - known)
        if unknown:
            raise UsageError(f"--config {config_path}: unknown option(s) {', '.join(unknown)}")
        parser.set_defaults(**values)
    args = parser.parse_args(argv)
    if hasattr(args, "model_family"):
        resolve_model_family(args)
    return args


def resolve_model_family(args: argparse.Namespace) -> None:
    """Fill ``model_path`` and the template flags from ``--model_family`` where not given."""
    families = model_families()
    if args.model_family not in families:
        raise UsageError(f"--model_family: unknown value {args.model_family!r}; expected one of "
                         f"{', '.join(families)}")
    family = families[args.model_family]
    for key in ("model_path", "question_start_tag", "question_end_tag", "answer_tag"):
        if getattr(args, key) is None:
            setattr(args, key, family.get(key))
    if not args.model_path:
        raise UsageError("--model_path: required (the model family has no default model)")


def template_from_args(args: argparse.Namespace) -> PromptTemplate:
    return PromptTemplate(args.question_start_tag, args.question_end_tag, args.answer_tag)


def parse_task_list(text: str, flag: str = "--task_list") -> List[int]:
    """``"1,2,3"`` -> ``[1, 2, 3]`` (the original's ``TASK_LIST`` environment variable)."""
    try:
        tasks = [int(part) for part in str(text).split(",") if part.strip()]
    except ValueError:
        raise UsageError(f"{flag} {text!r}: expected comma-separated task ids, e.g. 1,2,3") from None
    if not tasks or len(set(tasks)) != len(tasks):
        raise UsageError(f"{flag} {text!r}: expected distinct task ids, e.g. 1,2,3")
    return tasks
