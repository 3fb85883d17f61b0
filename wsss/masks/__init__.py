"""Stage 2, CLIP-ES: :mod:`.cams` (refined CAMs), :mod:`.label_maps`, :mod:`.crf`, :mod:`.api`
(:class:`~.api.MaskGenerator`) and :mod:`.run` (the resumable run behind ``tools/gen_pseudo_masks.py``).

The choices below are here, in a module without heavy imports, so that the tool parses its
arguments (and answers ``--help``) before torch loads.
"""

import argparse

from tagclip_cls.cli import FRACTION, POSITIVE

GRAD_MODES = ("loop", "batched")  # one backward per tag, or one batched backward


def add_cam_arguments(parser: argparse.ArgumentParser) -> None:
    """Stage 2's CAM flags, as ``gen_pseudo_masks.py`` and ``run_pipeline.py`` take them."""
    parser.add_argument("--grad-mode", choices=GRAD_MODES, default="loop",
                        help="per-tag gradients: one backward per tag on the last block, or one batched backward")
    parser.add_argument("--box-threshold", type=FRACTION,
                        help="box-mask threshold (default: the preset's: VOC 0.4, COCO and COCO-Stuff 0.7)")
    parser.add_argument("--affinity-layers", metavar="START:END",
                        help="python slice of the layers whose attention is the affinity, e.g. "
                             "--affinity-layers=-8: (default: the preset's: VOC -8:-1, COCO and COCO-Stuff -8:)")
    parser.add_argument("--threads", type=POSITIVE, help="torch CPU threads in stage 2 (default: cores / local ranks)")
