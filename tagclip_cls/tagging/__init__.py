"""Stage 1, TagCLIP: :mod:`.tagclip` (the method), :mod:`.api` (:class:`~.api.Tagger`),
:mod:`.runner` and :mod:`.run` (the resumable, shardable run behind ``tools/gen_tags.py``),
:mod:`.metrics` (mAP, F1)."""

METHODS = ("tagclip", "dmar", "coarse", "global")  # the full method and the paper's ablations
