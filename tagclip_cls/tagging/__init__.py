"""Stage 1, TagCLIP: :mod:`.tagclip` (the method), :mod:`.api` (:class:`~.api.Tagger`),
:mod:`.run` (``tools/gen_tags.py``'s run: its options checked, the model loaded, a Tagger built),
:mod:`.resumable` (a built Tagger over a list of images into the output folder, resumable and shardable),
:mod:`.metrics` (mAP, F1)."""

METHODS = ("tagclip", "dmar", "coarse", "global")  # the full method and the paper's ablations
