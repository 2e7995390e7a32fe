"""Command-line options shared by the LLM scripts: ``--config`` YAML defaults and prompt templates.

The research code is driven by hydra configs; we keep its key names as argparse
flags.  ``--config FILE.yaml`` supplies defaults for any flag (a model family's
model path and prompt template, a benchmark's hyperparameters); flags given on
the command line win over the file.

The original's command forms work as they are (:func:`hydra_overrides`):
``--config-name=phi1-5_tofu.yaml`` (a file in ``LLM/config/``, or a path) is ``--config``, and
``key=value`` overrides (``lr=1e-5``, ``alternate=true``, ``LoRA.r=8``) set the flag of the same name,
over the config file's value.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Collection, Dict, List, Optional, Sequence, Tuple

import yaml

from common.errors import UsageError, action_value
from common.io import read_yaml

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
    """Load a flat YAML mapping, with one-line errors for missing, unreadable or malformed files."""
    values = read_yaml(path, flag)
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


#: the original's nested hydra keys -> our flags
HYDRA_KEYS = {"LoRA.r": "LoRA_r", "LoRA.alpha": "LoRA_alpha", "LoRA.dropout": "LoRA_dropout",
              "eval.batch_size": "batch_size", "eval.ds_size": "ds_size",
              "eval.generation.max_length": "max_length", "eval.generation.max_new_tokens": "max_new_tokens"}
#: the original's keys without a flag here, and the one value each may take (what this project always does)
HYDRA_FIXED = {"save_checkpoint": "true",  # checkpoint-last is always saved (eval.py reads it)
               "forget_data": "tofu"}      # the script chooses the data: main_forget.py (TOFU) or real_world_*.py
#: the original's config names -> ours
CONFIG_ALIASES = {"llama_tofu.yaml": "llama2-7b_tofu.yaml"}
#: a switch's spellings in ``key=value`` overrides, which a config file's quoted strings may use too
BOOL_SPELLINGS = {**dict.fromkeys(("true", "True", "1", "yes"), True),
                  **dict.fromkeys(("false", "False", "0", "no", "", "null", "None"), False)}


def config_file(name: str, flag: str = "--config-name") -> str:
    """``--config-name``'s file: a path, else a file of ``LLM/config/`` (the original's names included)."""
    if Path(name).is_file():
        return name
    candidate = CONFIG_DIR / CONFIG_ALIASES.get(name, name)
    if not candidate.is_file() and not name.endswith((".yaml", ".yml")):
        candidate = CONFIG_DIR / f"{CONFIG_ALIASES.get(name + '.yaml', name + '.yaml')}"
    if not candidate.is_file():
        names = sorted(p.name for p in CONFIG_DIR.glob("*.yaml") if p.name != MODEL_CONFIG_FILE.name)
        names += sorted(CONFIG_ALIASES)
        raise UsageError(f"{flag}={name}: no such file here or in {CONFIG_DIR}; expected a path or one of "
                         f"{', '.join(names)}")
    return str(candidate)


def hydra_overrides(parser: argparse.ArgumentParser, argv: Sequence[str]) -> Tuple[List[str], Dict[str, object]]:
    """The original's hydra forms in ``argv``: returns the remaining arguments (``--config-name`` rewritten to
    ``--config``) and the ``key=value`` overrides as flag defaults (booleans as bools, other values as the
    strings argparse converts with the flag's type). A key with no flag here is a one-line error."""
    actions = {action.dest: action for action in parser._actions}
    rest: List[str] = []
    overrides: Dict[str, object] = {}
    tokens = list(argv)
    i = 0
    while i < len(tokens):
        token = tokens[i]
        option = parser._option_string_actions.get(tokens[i - 1]) if i else None
        is_value = option is not None and option.nargs != 0  # e.g. the path in "--data_path a=b"
        if token == "--config-name" and i + 1 < len(tokens):
            rest += ["--config", config_file(tokens[i + 1])]
            i += 2
            continue
        if token.startswith("--config-name="):
            rest += ["--config", config_file(token.split("=", 1)[1])]
        elif not is_value and not token.startswith("-") and "=" in token and \
                token.split("=", 1)[0].lstrip("+").replace(".", "").replace("_", "").isalnum():
            key, value = token.split("=", 1)
            key = key.lstrip("+")
            dest = HYDRA_KEYS.get(key, key)
            if key in HYDRA_FIXED:
                if value != HYDRA_FIXED[key]:
                    raise UsageError(f"{key}={value}: has no equivalent here (only {key}={HYDRA_FIXED[key]})")
            elif dest not in actions or dest == "help":
                raise UsageError(f"{key}={value}: unknown key (no --{dest} flag); see --help for the flags, "
                                 f"which keep the original's config key names")
            elif isinstance(actions[dest], (argparse._StoreTrueAction, argparse._StoreFalseAction,
                                            argparse.BooleanOptionalAction)):
                if value not in BOOL_SPELLINGS:
                    raise UsageError(f"{key}={value}: expected true or false")
                overrides[dest] = BOOL_SPELLINGS[value]
            else:
                overrides[dest] = value.strip("'\"")
        else:
            rest.append(token)
        i += 1
    return rest, overrides


def parse_with_config(parser: argparse.ArgumentParser, argv: Optional[Sequence[str]] = None,
                      foreign_keys: Collection[str] = ()) -> argparse.Namespace:
    """Parse ``argv``; values from ``--config`` become defaults, which ``key=value`` overrides replace and
    explicit flags override. ``foreign_keys``: config keys of another script that this one skips (the
    original's eval.py reads the unlearning config it was run with)."""
    argv, overrides = hydra_overrides(parser, sys.argv[1:] if argv is None else argv)
    pre, _ = parser.parse_known_args(argv)
    config_path = getattr(pre, "config", None)
    if config_path:
        values = {k: v for k, v in read_yaml_config(config_path).items() if k not in foreign_keys}
        actions = {action.dest: action for action in parser._actions if action.dest != "help"}
        unknown = sorted(set(map(str, values)) - set(actions))
        if unknown:
            raise UsageError(f"--config {config_path}: unknown option(s) {', '.join(unknown)}")
        # each value passes its flag's type, range and choices now, before any model is loaded: argparse
        # converts only string defaults, and a quoted "false" would be a truthy string
        parser.set_defaults(**{key: action_value(actions[key], value, f"--config {config_path}: {key}",
                                                 BOOL_SPELLINGS) for key, value in values.items()})
    parser.set_defaults(**overrides)
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
