"""Stage 1, TagCLIP: :mod:`.tagclip` (the method), :mod:`.api` (:class:`~.api.Tagger`),
:mod:`.runner` and :mod:`.run` (the resumable, shardable run behind ``tools/gen_tags.py``),
:mod:`.metrics` (mAP, F1)."""

METHODS = ("tagclip", "dmar", "coarse", "global")  # the full method and the paper's ablations
# how stage 1 groups images into forward passes: by exact input grid, or any sizes padded and masked
BATCHINGS = ("grid", "mixed")
