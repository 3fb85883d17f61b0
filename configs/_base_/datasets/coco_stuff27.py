# COCO-Stuff-164k on the 27 coarse classes (no background class). Official layout: the
# stuffthingmaps_trainval2017 PNGs (values 0..181 = COCO category id - 1, 255 unlabeled) are
# mapped to the 27 coarse classes when loaded; pseudo masks must hold 0..26 (255 ignore).
#   data/coco_stuff164k/images/{train2017,val2017}/ID.jpg
#   data/coco_stuff164k/annotations/{train2017,val2017}/ID.png
# Ground truth already in 0..26 (tools/prepare_data.py stuff-masks) works too: point
# seg_map_path at it and set val_dataloader.dataset.gt_remap=None.
# Validation and test use the published evaluation list: TagCLIP's 4,172 val2017 images
# (imageset/cocostuff/val.txt, shipped as data/splits/cocostuff27_val_tagclip.txt); every
# val2017 image instead: --cfg-options val_dataloader.dataset.shipped_split=None
#   test_dataloader.dataset.shipped_split=None
_base_ = ['./loaders_512.py']
dataset_type = 'COCOStuff27Dataset'
data_root = 'data/coco_stuff164k'
train_dataloader = dict(
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        data_prefix=dict(img_path='images/train2017', seg_map_path='annotations/train2017')))
val_dataloader = dict(
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        data_prefix=dict(img_path='images/val2017', seg_map_path='annotations/val2017'),
        shipped_split='cocostuff27_val_tagclip.txt'))
test_dataloader = val_dataloader
