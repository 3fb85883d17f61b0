# The CLIP-ES recipe (../deeplabv2/deeplabv2_r101-d8_clip-es-20k_voc12aug-321x321.py) at CPU
# size, for tests and smoke runs: the multi-scale model (scales 1/0.75/0.5, max fusion, a loss
# per scale and on the fused logits), a narrow Caffe ResNet-50 (4 base channels, output stride 8,
# no pretraining, so BatchNorm learns), the discrete training scales and SGD with the published
# multipliers (ASPP weights 10x, ASPP biases 20x without decay) and stepped poly schedule at a base lr that learns from
# scratch in a few hundred iterations; 64x64 inputs in the VOC layout and label space.
_base_ = ['./deeplabv2_r18-tiny_voc-64x64.py', '../_base_/schedules/deeplab_v2_lr_mult.py']
crop_size = (64, 64)
model = dict(
    type='MSCEncoderDecoder',
    scales=(1.0, 0.75, 0.5),
    backbone=dict(
        _delete_=True,
        type='CaffeResNet',
        depth=50,
        stem_channels=4,
        base_channels=4,
        num_stages=4,
        out_indices=(3, ),
        dilations=(1, 1, 2, 4),
        strides=(1, 2, 1, 1),
        norm_cfg=dict(type='BN', requires_grad=True)),
    decode_head=dict(in_channels=128))
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadCheckedAnnotations'),
    dict(type='RandomScaleChoice', scales=(0.5, 0.75, 1.0, 1.25, 1.5)),
    dict(type='RandomCrop', crop_size=crop_size),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackSegInputs'),
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
optim_wrapper = dict(_delete_=True, type='OptimWrapper',
                     optimizer=dict(type='SGD', lr=0.01, momentum=0.9, weight_decay=5e-4),
                     paramwise_cfg={{_base_.deeplab_v2_paramwise_cfg}}, clip_grad=None)
# deeplab-pytorch's stepped poly decay (../_base_/schedules/clip_es_20k.py), over 200 iterations
param_scheduler = [dict(type='SteppedPolyLR', iter_max=200, power=0.9, step_size=10, begin=0, end=200, by_epoch=False)]
