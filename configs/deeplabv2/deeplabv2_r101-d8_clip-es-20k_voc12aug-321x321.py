# DeepLab-v2 ResNet-101 trained on VOC train_aug pseudo masks with CLIP-ES's recipe, i.e.
# deeplab-pytorch's DeepLabV2_ResNet101_MSC (CLIP-ES README, step 3): Caffe ResNet-101, inputs
# at scales 1/0.75/0.5 fused by max with a loss on each and on the fused logits, SGD lr 2.5e-4
# (ASPP weights 10x, ASPP biases 20x without decay) poly 0.9, 20k iterations, batch 10,
# 321x321 crops of images rescaled by one of 0.5/0.75/1/1.25/1.5. Init: set
# model.backbone.init_cfg.checkpoint to the ImageNet model CLIP-ES names or deeplab-pytorch's
# COCO DeepLab-v1 model (CLIP-ES's 71.1 / 73.8 val come from masks made with ground-truth image
# labels, not from TagCLIP tags); see docs/stage3_segmentation.md, which also lists the known gaps.
# Validated and tested as published (original size, scales 0.5/0.75/1.0 fused by max, dense
# CRF: configs/_base_/protocols/published_msc_crf.py).
_base_ = [
    '../_base_/models/deeplabv2_r101-caffe_msc.py', '../_base_/datasets/voc12_aug.py',
    '../_base_/default_runtime.py', '../_base_/schedules/clip_es_20k.py',
    '../_base_/protocols/published_msc_crf.py'
]
crop_size = (321, 321)  # configs/voc12.yaml IMAGE.SIZE.TRAIN
model = dict(data_preprocessor=dict(size=crop_size), decode_head=dict(num_classes=21))
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadCheckedAnnotations'),
    # configs/voc12.yaml DATASET.SCALES, drawn as in libs/datasets/base.py _augmentation
    dict(type='RandomScaleChoice', scales=(0.5, 0.75, 1.0, 1.25, 1.5)),
    # libs/datasets/base.py: pad to the crop (data_preprocessor, mean/255) then a random crop
    dict(type='RandomCrop', crop_size=crop_size),
    dict(type='RandomFlip', prob=0.5),  # libs/datasets/base.py: flip with probability 0.5
    dict(type='PackSegInputs'),
]
test_pipeline = {{_base_.published_test_pipeline}}
val_cfg = {{_base_.published_val_cfg}}
test_cfg = {{_base_.published_test_cfg}}
# configs/voc12.yaml SOLVER.BATCH_SIZE.TRAIN 5 x SOLVER.ITER_SIZE 2 (BN frozen: the same
# gradient); per process with N GPUs set train_dataloader.batch_size=10/N
train_dataloader = dict(batch_size=10, dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
# the published figures beside each results table, with their experiment labels (CLIP-ES trained
# on masks from ground-truth image labels): data/published/figures.json
custom_hooks = [dict(type='SegResultsTableHook', published_dataset='voc2012')]
