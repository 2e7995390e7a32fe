"""Progress bars that iterate what they wrap exactly once.

``tqdm.auto.tqdm`` is a subclass of ``tqdm.asyncio.tqdm_asyncio``, whose constructor calls
``iter(iterable)`` to prepare ``__anext__``; iterating the bar then calls ``iter(iterable)`` again.
Around a ``DataLoader`` that builds two loader iterators per pass: with ``num_workers > 0`` the worker
processes start twice, and each iterator draws its base seed from the loader's generator (or the
global RNG), so one extra random number is taken before the first batch.  The original research code
loops over its loaders directly or through ``tqdm.tqdm`` -- one iterator, one draw per pass -- and so
does :func:`progress`.
"""
from __future__ import annotations

from typing import Iterable, Optional, TypeVar

from tqdm.std import tqdm as _std_tqdm

T = TypeVar("T")


def progress(iterable: Optional[Iterable[T]] = None, **kwargs) -> _std_tqdm:
    """A ``tqdm`` progress bar over ``iterable`` (any ``tqdm`` keyword) that calls ``iter(iterable)``
    once, when the bar is iterated."""
    return _std_tqdm(iterable, **kwargs)
