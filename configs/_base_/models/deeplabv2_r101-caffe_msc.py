# DeepLab-v2 as CLIP-ES trains it with deeplab-pytorch (DeepLabV2_ResNet101_MSC): the Caffe
# ResNet-101 (stride in the 1x1 conv, ceil-mode stem pool), output stride 8, four 3x3 atrous
# branches summed, run on inputs at scales 1, 0.75 and 0.5 whose logits are fused by max, with a
# loss on every scale and on the fused logits. BatchNorm frozen. The init checkpoint must set
# every backbone weight (StrictPretrained, any of the deeplab-pytorch / torchvision / mmseg
# layouts); see docs/stage3_segmentation.md (Initialisation) for the two published inits.
norm_cfg = dict(type='BN', requires_grad=False)  # main.py: freeze_bn(); no BN param in any lr group
data_preprocessor = dict(
    type='SegDataPreProcessor',
    mean=[104.008, 116.669, 122.675],  # configs/voc12.yaml IMAGE.MEAN, in BGR (libs/datasets/base.py)
    std=[1.0, 1.0, 1.0],  # libs/datasets/base.py: mean subtraction only (Caffe input)
    bgr_to_rgb=False,  # libs/datasets/voc.py reads BGR with cv2 and feeds it as is
    pad_val=0,  # libs/datasets/base.py pads the image with the mean (0 after subtraction)
    seg_pad_val=255)  # libs/datasets/base.py pads labels with IGNORE_LABEL (configs/voc12.yaml)
model = dict(
    type='MSCEncoderDecoder',
    scales=(1.0, 0.75, 0.5),  # libs/models/__init__.py DeepLabV2_ResNet101_MSC + libs/models/msc.py
    data_preprocessor=data_preprocessor,
    backbone=dict(
        type='CaffeResNet',  # libs/models/resnet.py _Bottleneck (stride in reduce) and _Stem (ceil_mode)
        depth=101,  # configs/voc12.yaml MODEL.N_BLOCKS [3, 4, 23, 3]
        num_stages=4,
        out_indices=(3, ),
        strides=(1, 2, 1, 1),  # libs/models/deeplabv2.py: layer2..layer5 strides
        dilations=(1, 1, 2, 4),  # libs/models/deeplabv2.py: layer2..layer5 dilations
        contract_dilation=False,  # libs/models/resnet.py _ResLayer: every block at the layer's dilation
        norm_cfg=norm_cfg,
        norm_eval=True,  # main.py: freeze_bn()
        init_cfg=dict(type='StrictPretrained',
                      checkpoint='data/models/deeplabv2_init/resnet101_imagenet.pth')),
    decode_head=dict(
        type='DeepLabV2Head',
        in_channels=2048,
        in_index=0,
        dilations=(6, 12, 18, 24),  # configs/voc12.yaml MODEL.ATROUS_RATES
        dropout_ratio=0,
        num_classes=21,  # configs/voc12.yaml DATASET.N_CLASSES
        ignore_index=255,  # configs/voc12.yaml DATASET.IGNORE_LABEL
        align_corners=False,  # libs/models/msc.py: F.interpolate(..., align_corners=False)
        # main.py: nn.CrossEntropyLoss(ignore_index=255), i.e. the mean over labelled pixels
        loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0, avg_non_ignore=True)),
    train_cfg=dict(),
    test_cfg=dict(mode='whole'))
