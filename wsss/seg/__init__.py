"""Stage 3: train and evaluate an mmsegmentation network on stage-2 pseudo masks.

Import ``wsss.seg.register`` (configs do, via ``custom_imports``) to register the project's
mmseg modules; the other modules of this package do not need it.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

__all__ = ["Segmenter"]

if TYPE_CHECKING:
    from wsss.seg.api import Segmenter


def __getattr__(name: str):
    if name in __all__:  # imported on first use (mmseg is heavy)
        from wsss.seg import api
        return getattr(api, name)
    raise AttributeError(f"module 'wsss.seg' has no attribute {name!r}")
