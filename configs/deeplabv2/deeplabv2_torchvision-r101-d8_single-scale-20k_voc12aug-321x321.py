# DeepLab-v2 on torchvision's ResNet-101 (ImageNet init), one input scale, trained on VOC
# train_aug pseudo masks: the recipe this project used before following CLIP-ES's
# (deeplabv2_r101-d8_clip-es-20k_voc12aug-321x321.py). 321x321 crops, batch 10 (per process:
# with N GPUs set train_dataloader.batch_size=10/N), continuous rescaling 0.5-1.5, 20k
# iterations, SGD lr 2e-4 poly 0.9 (x10 on the whole head), momentum 0.9, weight decay 5e-4;
# tested single-scale with the long side resized to 513.
_base_ = [
    '../_base_/models/deeplabv2_r101.py', '../_base_/datasets/voc12_aug.py',
    '../_base_/default_runtime.py', '../_base_/schedules/sgd-2e-4_head-10x_poly_20k.py'
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
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(513, 513), keep_ratio=True),
    dict(type='LoadCheckedAnnotations'),
    dict(type='PackSegInputs'),
]
train_dataloader = dict(batch_size=10, dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
