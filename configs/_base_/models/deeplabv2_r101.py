# DeepLab-v2: dilated ResNet-101 (output stride 8) + four 3x3 atrous branches (rates
# 6/12/18/24) whose class scores are summed. BatchNorm is frozen as in DeepLab-v2 (a batch
# of 10 crops is too small to re-estimate it). ImageNet init from torchvision's weights, which
# must set every backbone weight (StrictPretrained); for another init set
# model.backbone.init_cfg.checkpoint to a file in the torchvision or deeplab-pytorch layout.
norm_cfg = dict(type='BN', requires_grad=False)
data_preprocessor = dict(
    type='SegDataPreProcessor',
    mean=[123.675, 116.28, 103.53],
    std=[58.395, 57.12, 57.375],
    bgr_to_rgb=True,
    pad_val=0,
    seg_pad_val=255)
model = dict(
    type='EncoderDecoder',
    data_preprocessor=data_preprocessor,
    backbone=dict(
        type='ResNet',
        depth=101,
        num_stages=4,
        out_indices=(3, ),
        dilations=(1, 1, 2, 4),
        strides=(1, 2, 1, 1),
        norm_cfg=norm_cfg,
        norm_eval=True,
        style='pytorch',
        contract_dilation=True,
        init_cfg=dict(type='StrictPretrained', checkpoint='torchvision://resnet101')),
    decode_head=dict(
        type='DeepLabV2Head',
        in_channels=2048,
        in_index=0,
        dilations=(6, 12, 18, 24),
        dropout_ratio=0,
        num_classes=21,
        align_corners=False,
        loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0, avg_non_ignore=True)),
    train_cfg=dict(),
    test_cfg=dict(mode='whole'))
