"""The toolkit's ground floor and stage 1.

Layers (each sub-package only imports from those above it in this list):

* :mod:`tagclip_cls.runtime`: what every tool uses (errors, atomic writes, ids, ranks, threads, data files,
  precision, CPU memory, checks of command-line values);
* :mod:`tagclip_cls.formats`: every on-disk format, one reader/writer pair each;
* :mod:`tagclip_cls.core`: the CLIP core shared by stages 1 and 2 (loading, the dense ViT
  forward, text embeddings, image decoding, presets and class lists, score-map boxes);
* :mod:`tagclip_cls.cli`: the tools' command-line kit (argument vocabulary, logging set-up,
  one-line errors), above the core whose choices (presets, batchings) its flags offer;
* :mod:`tagclip_cls.tagging`: stage 1, TagCLIP; its Python entry point is :class:`Tagger`.

Stages 2 and 3 and the applications live in :mod:`wsss` (see its docstring for their layers);
nothing here imports :mod:`wsss`. ``tests/test_layers.py`` holds both packages to these rules.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

__all__ = ["Tagger", "TagResult"]

if TYPE_CHECKING:
    from tagclip_cls.tagging.api import Tagger, TagResult


def __getattr__(name: str):
    # imported on first use, so that `import tagclip_cls.runtime...` (tools' argument parsing) stays light
    if name in __all__:
        from tagclip_cls.tagging import api
        return getattr(api, name)
    raise AttributeError(f"module 'tagclip_cls' has no attribute {name!r}")
