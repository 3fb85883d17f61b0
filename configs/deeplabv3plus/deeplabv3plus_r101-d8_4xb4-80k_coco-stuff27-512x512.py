# DeepLab-v3+ ResNet-101-v1c on COCO-Stuff-27 (27 coarse classes, no background) pseudo
# masks, mmseg's 80k schedule. Batch 4 per process; mmseg's schedule assumes 4 GPUs.
# This project's own recipe: neither TagCLIP nor CLIP-ES published a trained-network figure
# for COCO-Stuff-27 (TagCLIP's figures there are pseudo masks scored on val).
_base_ = [
    '../_base_/models/deeplabv3plus_r101.py', '../_base_/datasets/coco_stuff27.py',
    '../_base_/default_runtime.py', '../_base_/schedules/schedule_80k.py'
]
crop_size = (512, 512)
model = dict(
    data_preprocessor=dict(size=crop_size),
    decode_head=dict(num_classes=27),
    auxiliary_head=dict(num_classes=27))
