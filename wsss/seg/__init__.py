"""Stage 3: train and evaluate an mmsegmentation network on stage-2 pseudo masks.

Import ``wsss.seg.register`` (configs do, via ``custom_imports``) to register the project's
mmseg modules; the other modules of this package do not need it.
"""
