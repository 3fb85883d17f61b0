# mmseg's standard 512x512 augmentation (random rescale 0.5-2x of a 2048x512 frame, crop,
# flip, photometric jitter) and single-scale test at the same frame. Masks are loaded with
# the project's LoadCheckedAnnotations (clear errors for malformed masks, COCO-Stuff remap).
crop_size = (512, 512)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadCheckedAnnotations'),
    dict(type='RandomResize', scale=(2048, 512), ratio_range=(0.5, 2.0), keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion'),
    dict(type='PackSegInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(2048, 512), keep_ratio=True),
    # ground truth is loaded after Resize: predictions are scored at the original size
    dict(type='LoadCheckedAnnotations'),
    dict(type='PackSegInputs'),
]
