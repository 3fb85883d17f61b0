# COCO-Object (background + 80 thing classes) on COCO 2017: train on train2017 with pseudo
# masks, validate on val2017 against the palette-PNG masks written by tools/prepare_data.py
# (0 background, class index + 1, 255 ignore).
#   data/coco/images/{train2017,val2017}/ID.jpg
#   data/coco/masks_object/val2017/ID.png      (ground truth: tools/prepare_data.py coco-masks
#                                               --instances annotations/instances_val2017.json)
#   data/coco/masks_object/train2017/ID.png    (optional: fully supervised upper bound)
# Every image in images/train2017 needs a pseudo mask; to train on a subset, give a split
# file of IDs: --cfg-options train_dataloader.dataset.ann_file=PATH
_base_ = ['./loaders_512.py']
dataset_type = 'COCOObjectDataset'
data_root = 'data/coco'
train_dataloader = dict(
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        data_prefix=dict(img_path='images/train2017', seg_map_path='masks_object/train2017')))
val_dataloader = dict(
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        data_prefix=dict(img_path='images/val2017', seg_map_path='masks_object/val2017'),
        # prepare_data writes masks only for images with annotations: evaluate those,
        # 4,952 of val2017's 5,000 (another count is warned about)
        list_from='masks',
        expected_images=4952))
test_dataloader = val_dataloader
