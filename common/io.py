"""Crash-safe outputs and clear-error inputs.

Every file a script writes goes through a temporary file in the same folder
followed by ``os.replace``: a crash or kill leaves either the old file or the
new one, never half of one.  Every checkpoint a script reads goes through
:func:`load_torch_file`, which turns a missing, truncated or foreign file into
a :class:`~common.errors.UsageError` naming the flag and the file.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime
import importlib.metadata
import json
import os
import platform
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any, Dict, Iterator, Mapping, Optional, Sequence, Union

import torch

from common.errors import UsageError

PathLike = Union[str, os.PathLike]

#: Distributions whose versions go into every run record.
RECORDED_PACKAGES = ("torch", "torchvision", "numpy", "scikit-learn", "transformers", "diffusers",
                     "accelerate", "tokenizers", "peft", "scipy")


@contextlib.contextmanager
def atomic_path(path: PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; move it onto ``path`` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


@contextlib.contextmanager
def atomic_directory(path: PathLike) -> Iterator[Path]:
    """Yield a temporary folder next to ``path``; it replaces ``path`` only if the block succeeds.

    For multi-file outputs such as ``save_pretrained`` folders.  An existing
    ``path`` is moved aside first and deleted only after the new folder is in
    place, so at every instant either the old or the new complete folder exists
    (the aside copy is named ``.<name>.old``).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def atomic_torch_save(obj: Any, path: PathLike) -> Path:
    """``torch.save`` that never leaves a partial file at ``path``."""
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)
    return Path(path)


def atomic_write_text(text: str, path: PathLike) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def _to_jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_jsonable(v) for v in value]
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if hasattr(value, "item") and callable(value.item):  # NumPy scalars
        return value.item()
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return str(value)


def atomic_write_json(obj: Any, path: PathLike) -> Path:
    """Write ``obj`` as indented JSON (tensors and NumPy scalars converted) atomically."""
    return atomic_write_text(json.dumps(_to_jsonable(obj), indent=2, sort_keys=False) + "\n", path)


def read_json(path: PathLike, flag: str = "") -> Any:
    """Read a JSON file; a missing or corrupt file is a one-line :class:`UsageError`."""
    label = f"{flag} {path}" if flag else str(path)
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except FileNotFoundError:
        raise UsageError(f"{label}: file not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise UsageError(f"{label}: not valid JSON ({err})") from None


def load_torch_file(path: Optional[PathLike], flag: str, map_location: Any = "cpu") -> Any:
    """``torch.load`` with one-line errors naming ``flag`` and the file.

    Checkpoints hold only tensors, containers and plain values; we load with
    ``weights_only=False`` only because research checkpoints also pickle
    argparse namespaces -- never point this at files you do not trust.
    """
    if not path:
        raise UsageError(f"{flag}: a path is required")
    path = Path(path)
    if not path.exists():
        raise UsageError(f"{flag} {path}: file not found")
    if path.is_dir():
        raise UsageError(f"{flag} {path}: is a folder, expected a checkpoint file")
    try:
        return torch.load(path, map_location=map_location, weights_only=False)
    except Exception as err:  # torch raises many types for truncated/corrupt pickles and zips
        reason = " ".join(str(err).split())[:200] or type(err).__name__
        raise UsageError(f"{flag} {path}: cannot be read as a torch checkpoint, it may be "
                         f"corrupt or truncated ({reason})") from None


def library_versions() -> Dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in RECORDED_PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def run_record(args: Union[argparse.Namespace, Mapping[str, Any], None] = None,
               metrics: Optional[Mapping[str, Any]] = None, **extra: Any) -> Dict[str, Any]:
    """The reproducibility record of a run: command, full config, seed, versions, metrics."""
    config = vars(args) if isinstance(args, argparse.Namespace) else dict(args or {})
    record: Dict[str, Any] = {
        "command": " ".join([os.path.basename(sys.executable)] + sys.argv),
        "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "seed": config.get("seed"),
        "config": config,
        "versions": library_versions(),
        "host": {"platform": platform.platform(), "torch_build": torch.__version__,
                 "cuda": torch.cuda.is_available(),
                 "torch_threads": torch.get_num_threads()},
    }
    record.update(extra)
    record["metrics"] = dict(metrics or {})
    return record


def write_run_record(save_dir: PathLike, args: Union[argparse.Namespace, Mapping[str, Any], None] = None,
                     metrics: Optional[Mapping[str, Any]] = None, filename: str = "run.json",
                     **extra: Any) -> Path:
    """Write :func:`run_record` as ``<save_dir>/<filename>`` atomically."""
    return atomic_write_json(run_record(args, metrics, **extra), Path(save_dir) / filename)


def check_writable_dir(path: PathLike, flag: str = "--save_dir") -> Path:
    """Check that ``path`` is, or can be created as, a writable folder -- without creating anything.

    For validating an output folder before work whose inputs may still turn
    out bad; :func:`ensure_writable_dir` creates it once they are all checked.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UsageError(f"{flag} {path}: exists and is not a folder")
    existing = path
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise UsageError(f"{flag} {path}: cannot create folder ({existing} is a file)")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UsageError(f"{flag} {path}: folder {existing} is not writable")
    return path


def ensure_writable_dir(path: PathLike, flag: str = "--save_dir") -> Path:
    """Create ``path`` if needed and check we can write there, with a one-line error otherwise."""
    path = check_writable_dir(path, flag)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UsageError(f"{flag} {path}: cannot create folder ({err.strerror})") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise UsageError(f"{flag} {path}: folder is not writable")
    return path


def ensure_writable_file(path: PathLike, flag: str, suffixes: Optional[Sequence[str]] = None) -> Path:
    """Check, before any work, that ``path`` can be written as a file (its folder is created if needed).

    ``suffixes`` (without dots; ``""`` allows none) restricts the file type.
    """
    path = Path(path)
    if path.is_dir():
        raise UsageError(f"{flag} {path}: is a folder, expected a file name")
    if suffixes is not None and path.suffix.lower().lstrip(".") not in suffixes:
        raise UsageError(f"{flag} {path}: unsupported file type {path.suffix!r}; expected one of "
                         f"{', '.join('.' + s for s in sorted(suffixes) if s)}")
    ensure_writable_dir(path.parent, flag)
    return path


def ensure_writable_plot(path: PathLike, flag: str = "--plot") -> Path:
    """:func:`ensure_writable_file` for a matplotlib figure: a format matplotlib writes, or no suffix (png)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    return ensure_writable_file(path, flag, suffixes=["", *FigureCanvasAgg.get_supported_filetypes()])
