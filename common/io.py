"""Crash-safe outputs and clear-error inputs.

Every file a script writes goes through a temporary file in the same folder
followed by ``os.replace``: a crash or kill leaves either the old file or the
new one, never half of one.  Every checkpoint a script reads goes through
:func:`load_torch_file`, which never runs code from the file (``weights_only``
loading) and turns a missing, truncated, foreign or unsafe file into a
:class:`~common.errors.UsageError` naming the flag and the file.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime
import importlib.metadata
import json
import os
import pickle
import platform
import re
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Union

import torch

from common.errors import UsageError

PathLike = Union[str, os.PathLike]

#: Distributions whose versions go into every run record.
RECORDED_PACKAGES = ("torch", "torchvision", "numpy", "scikit-learn", "transformers", "diffusers",
                     "accelerate", "tokenizers", "peft", "scipy")


def current_umask() -> int:
    """The process's file-creation mask (``os.umask`` can only be read by setting it, so it is set back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; move it onto ``path`` only if the block succeeds.

    The file gets the mode a plain ``open(path, "w")`` would (``0o666`` less the umask), not
    ``mkstemp``'s private ``0o600``, so a shared results folder stays readable to its group.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.fchmod(fd, 0o666 & ~current_umask())
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
    tmp.chmod(0o777 & ~current_umask())  # mkdtemp's folder is private (0o700); a plain mkdir's is not
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


def to_jsonable(value: Any) -> Any:
    """``value`` as plain JSON values: containers as dicts/lists, tensors as lists, paths as strings."""
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
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
    return atomic_write_text(json.dumps(to_jsonable(obj), indent=2, sort_keys=False) + "\n", path)


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


def read_yaml(path: PathLike, flag: str = "--config") -> Any:
    """Read a YAML file with ``yaml.safe_load`` (no Python objects); a missing, unreadable, non-UTF-8 or
    malformed file is a one-line :class:`UsageError` naming ``flag`` and the file."""
    import yaml

    label = f"{flag} {path}"
    if not Path(path).is_file():
        raise UsageError(f"{label}: file not found" if not Path(path).exists() else f"{label}: not a file")
    try:
        with open(path, encoding="utf-8") as handle:
            return yaml.safe_load(handle)
    except UnicodeDecodeError as err:
        raise UsageError(f"{label}: not UTF-8 text (byte {err.start}: {err.reason}); expected a YAML file") from None
    except OSError as err:
        raise UsageError(f"{label}: cannot be read ({err.strerror})") from None
    except yaml.YAMLError as err:
        raise UsageError(f"{label}: not valid YAML ({' '.join(str(err).split())})") from None


#: ``--trust_checkpoint``: load checkpoints with full pickle (code can run); setting this variable to 1 is the same.
TRUST_FLAG = "--trust_checkpoint"
TRUST_ENV = "DUALOPTIM_TRUST_CHECKPOINT"
_trust_requested = False  # set by --trust_checkpoint of the running script (see add_trust_args)
_trust_warned = False


def research_code_globals() -> List[Any]:
    """The non-tensor types the research code's checkpoints legitimately hold, allowed by every load.

    ``argparse.Namespace`` (the DiT forget checkpoint's ``"args"``) and NumPy
    number scalars (the image-classification ``evaluation_result``: its MIA
    value is ``ndarray.mean()``).  Rebuilding either runs no code of the
    file's choosing; object arrays and every other global stay refused.
    """
    import numpy as np
    try:
        from numpy._core.multiarray import scalar
    except ImportError:  # NumPy 1.x
        from numpy.core.multiarray import scalar

    dtypes = [getattr(np.dtypes, name) for name in ("Float64DType", "Float32DType", "Float16DType",
                                                     "Int64DType", "Int32DType", "BoolDType")]
    # NumPy 1.x pickles its scalars as numpy.core.multiarray.scalar
    return [argparse.Namespace, np.dtype, scalar, (scalar, "numpy.core.multiarray.scalar"), *dtypes]


class _TrustAction(argparse.Action):
    """``store_true`` that also opts this process in (:func:`trust_requested`), so every later
    :func:`load_torch_file` of the script sees it without the flag being passed down."""

    def __call__(self, parser, namespace, values, option_string=None):
        global _trust_requested
        _trust_requested = True
        setattr(namespace, self.dest, True)


def add_trust_args(parser: argparse.ArgumentParser) -> None:
    """``--trust_checkpoint``: the opt-in to load files that hold more than tensors and plain values."""
    parser.add_argument(TRUST_FLAG, action=_TrustAction, nargs=0, default=False,
                        help=f"load checkpoints, masks and snapshots with full pickle (weights_only=False), "
                             f"which runs any code the file holds; only for legacy files from a source you "
                             f"trust (also: {TRUST_ENV}=1). Default: tensors and plain values only")


def trust_requested() -> bool:
    """Whether this process loads checkpoints with full pickle (``--trust_checkpoint`` or :data:`TRUST_ENV`)."""
    return _trust_requested or os.environ.get(TRUST_ENV, "").strip() not in ("", "0")


#: How torch's weights-only unpickler words a refused type (as opposed to a broken pickle).
_REFUSED_TYPE = re.compile(r"GLOBAL|Can only build|allowlist")


def _unpickler_reason(err: Exception) -> str:
    """The weights-only unpickler's own reason, without torch's paragraph around it."""
    found = re.search(r"WeightsUnpickler error:(.*?)(Check the documentation|$)", str(err), re.S)
    return found.group(1) if found and found.group(1).strip() else str(err)


def _disallowed_type(path: Path, err: Exception) -> str:
    """The global a weights-only load refused, for the one-line error."""
    allowed = {f"{obj.__module__}.{obj.__name__}" for obj in research_code_globals() if not isinstance(obj, tuple)}
    allowed |= {obj[1] for obj in research_code_globals() if isinstance(obj, tuple)}
    try:
        names = sorted(name for name in torch.serialization.get_unsafe_globals_in_checkpoint(path) if name not in allowed)
    except Exception:  # noqa: BLE001 -- the name is a courtesy; the refusal stands either way
        names = []
    if names:
        return ", ".join(names[:3])
    built = re.search(r"got <class '([^']+)'>", str(err))
    return built.group(1) if built else "an object that is not a tensor or plain value"


def load_torch_file(path: Optional[PathLike], flag: str, map_location: Any = "cpu") -> Any:
    """``torch.load(weights_only=True)`` with one-line errors naming ``flag`` and the file.

    Only tensors, plain containers and values, and :func:`research_code_globals`
    are rebuilt: a file that pickles anything else (code to run) is refused
    with the type it holds, before any of it runs.  With ``--trust_checkpoint``
    (:func:`trust_requested`) it loads with full pickle instead, after one
    warning line on stderr.
    """
    global _trust_warned
    if not path:
        raise UsageError(f"{flag}: a path is required")
    path = Path(path)
    if not path.exists():
        raise UsageError(f"{flag} {path}: file not found")
    if path.is_dir():
        raise UsageError(f"{flag} {path}: is a folder, expected a checkpoint file")
    trusted = trust_requested()
    if trusted and not _trust_warned:
        _trust_warned = True
        print(f"warning: {TRUST_FLAG}: loading {path} and later files with full pickle; a file from an "
              f"untrusted source can run code", file=sys.stderr)
    try:
        if trusted:
            return torch.load(path, map_location=map_location, weights_only=False)
        with torch.serialization.safe_globals(research_code_globals()):
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        if not _REFUSED_TYPE.search(str(err)):
            raise UsageError(f"{flag} {path}: cannot be read as a torch checkpoint, it may be corrupt or "
                             f"truncated ({one_line(_unpickler_reason(err))})") from None
        raise UsageError(f"{flag} {path}: holds {_disallowed_type(path, err)}, not allowed in a safely loaded "
                         f"file (tensors and plain values only); if you trust the file's source, pass "
                         f"{TRUST_FLAG} or set {TRUST_ENV}=1") from None
    except Exception as err:  # torch raises many types for truncated/corrupt pickles and zips
        raise UsageError(f"{flag} {path}: cannot be read as a torch checkpoint, it may be "
                         f"corrupt or truncated ({one_line(err)})") from None


def refuse_pickled_weights(folder: PathLike, flag: str) -> None:
    """Raise :func:`load_torch_file`'s one-line refusal for a pickled ``*.bin`` in ``folder`` that holds code.

    For a ``from_pretrained`` that failed: transformers and diffusers read a legacy ``.bin`` with
    ``weights_only=True`` too, but their messages quote torch's paragraph ("Re-running torch.load with
    weights_only set to False ...") without naming the refused type.  Returns when no file is refused
    (the caller's own error stands), and checks nothing under the opt-in, where the check itself
    would run the file's code.
    """
    folder = Path(folder)
    if trust_requested() or not folder.is_dir():
        return
    for weights in sorted(folder.glob("*.bin")):
        try:
            load_torch_file(weights, flag)
        except UsageError as err:
            if "not allowed in a safely loaded file" in str(err):
                raise


def _describe(obj: Any) -> str:
    if isinstance(obj, Mapping):
        keys = ", ".join(repr(k) for k in list(obj)[:4])
        return f"a dict with keys {keys}{', ...' if len(obj) > 4 else ''}" if obj else "an empty dict"
    return f"a {type(obj).__name__}"


def check_state_dict(state: Any, label: str) -> Dict[str, torch.Tensor]:
    """``state`` if it is a state dict (a non-empty dict of name -> tensor), else a one-line
    :class:`UsageError` starting with ``label`` (the flag and the file)."""
    if not isinstance(state, Mapping) or not state:
        raise UsageError(f"{label}: expected a state dict (parameter name -> tensor), got {_describe(state)}")
    for key, value in state.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            raise UsageError(f"{label}: state dict entry {key!r} is a {type(value).__name__}, expected a tensor")
    return dict(state)


def checkpoint_state_dict(checkpoint: Any, label: str, key: str = "state_dict") -> Dict[str, torch.Tensor]:
    """The state dict of a research-style checkpoint: ``checkpoint[key]``, or the checkpoint itself when
    it is a bare state dict; a one-line :class:`UsageError` when it holds none or holds non-tensors."""
    if isinstance(checkpoint, Mapping) and key in checkpoint:
        return check_state_dict(checkpoint[key], f"{label} ({key!r})")
    if isinstance(checkpoint, Mapping) and checkpoint and any(isinstance(v, torch.Tensor)
                                                              for v in checkpoint.values()):
        return check_state_dict(checkpoint, label)
    raise UsageError(f"{label}: holds no state dict (expected {key!r} or a dict of parameter name -> tensor), "
                     f"got {_describe(checkpoint)}")


def load_state_dict_file(path: Optional[PathLike], flag: str) -> Dict[str, torch.Tensor]:
    """:func:`load_torch_file` of a file that must hold a bare state dict (weights, Fisher diagonals)."""
    return check_state_dict(load_torch_file(path, flag), f"{flag} {path}")


def one_line(err: Exception, limit: int = 200) -> str:
    """An exception's message on one line, cut to ``limit`` characters (its type name when empty)."""
    return " ".join(str(err).split())[:limit] or type(err).__name__


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
