"""Stage 2, CLIP-ES: :mod:`.cams` (refined CAMs), :mod:`.label_maps`, :mod:`.crf`, :mod:`.api`
(:class:`~.api.MaskGenerator`) and :mod:`.run` (the resumable run behind ``tools/gen_pseudo_masks.py``).

The choices below are here, in a module without heavy imports, so that the tool parses its
arguments (and answers ``--help``) before torch loads.
"""

GRAD_MODES = ("loop", "batched")  # one backward per tag, or one batched backward
CRF_IMAGE_MODES = ("published", "rgb")  # the published wrapped BGR-minus-mean image, or the picture
