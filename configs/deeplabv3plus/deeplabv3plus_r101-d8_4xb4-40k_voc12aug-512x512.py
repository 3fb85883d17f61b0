# DeepLab-v3+ ResNet-101-v1c on VOC train_aug pseudo masks, mmseg's 40k schedule.
# Batch 4 per process; mmseg's schedule assumes 4 GPUs (torchrun --nproc_per_node=4).
# This project's own recipe, not a published one: CLIP-ES's VOC network is DeepLab-v2
# (../deeplabv2/, trained on masks from ground-truth image labels).
_base_ = [
    '../_base_/models/deeplabv3plus_r101.py', '../_base_/datasets/voc12_aug.py',
    '../_base_/default_runtime.py', '../_base_/schedules/schedule_40k.py'
]
crop_size = (512, 512)
model = dict(
    data_preprocessor=dict(size=crop_size),
    decode_head=dict(num_classes=21),
    auxiliary_head=dict(num_classes=21))
