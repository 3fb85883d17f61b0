# DeepLab-v2 ResNet-101 (ImageNet init) trained on VOC train_aug pseudo masks with CLIP-ES's
# recipe: 321x321 crops, batch 10 (per process: with N GPUs set
# train_dataloader.batch_size=10/N), 20k iterations, SGD lr 2e-4 poly 0.9, momentum 0.9,
# weight decay 5e-4; validated and tested as published (original size, scales 0.5/0.75/1.0
# fused by max, dense CRF: configs/_base_/protocols/published_msc_crf.py).
_base_ = [
    '../_base_/models/deeplabv2_r101.py', '../_base_/datasets/voc12_aug.py',
    '../_base_/default_runtime.py', '../_base_/schedules/clip_es_20k.py',
    '../_base_/protocols/published_msc_crf.py'
]
crop_size = (321, 321)
model = dict(data_preprocessor=dict(size=crop_size), decode_head=dict(num_classes=21))
# random rescale of the (<= 500 px) VOC images by about 0.5-1.5x, crop, flip
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadCheckedAnnotations'),
    dict(type='RandomResize', scale=(500, 500), ratio_range=(0.5, 1.5), keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackSegInputs'),
]
test_pipeline = {{_base_.published_test_pipeline}}
val_cfg = {{_base_.published_val_cfg}}
test_cfg = {{_base_.published_test_cfg}}
train_dataloader = dict(batch_size=10, dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
custom_hooks = [
    dict(
        type='SegResultsTableHook',
        reference=[
            dict(name='CLIP-ES, DeepLabV2 R101 ImageNet init, VOC val', mIoU=71.1),
            dict(name='CLIP-ES, DeepLabV2 R101 ImageNet init, VOC test', mIoU=71.4),
            dict(name='CLIP-ES, DeepLabV2 R101 COCO-pretrained init, VOC val', mIoU=73.8),
            dict(name='CLIP-ES, DeepLabV2 R101 COCO-pretrained init, VOC test', mIoU=73.9),
        ])
]
