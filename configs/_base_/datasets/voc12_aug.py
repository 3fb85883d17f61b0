# PASCAL VOC 2012 + SBD: train on the 10,582-image train_aug split with pseudo masks
# (tools/train_seg.py --pseudo-masks DIR sets train_dataloader.dataset.pseudo_mask_dir;
# without it SegmentationClassAug is used, i.e. the fully supervised upper bound),
# validate on the 1,449 val images against SegmentationClass.
#   data/VOCdevkit/VOC2012/JPEGImages/ID.jpg
#   data/VOCdevkit/VOC2012/SegmentationClass/ID.png      (val ground truth)
#   data/VOCdevkit/VOC2012/SegmentationClassAug/ID.png   (optional, SBD ground truth)
#   data/VOCdevkit/VOC2012/ImageSets/Segmentation/{train_aug,val}.txt
_base_ = ['./loaders_512.py']
dataset_type = 'VOCPseudoMaskDataset'
data_root = 'data/VOCdevkit/VOC2012'
train_dataloader = dict(
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        data_prefix=dict(img_path='JPEGImages', seg_map_path='SegmentationClassAug'),
        ann_file='ImageSets/Segmentation/train_aug.txt'))
val_dataloader = dict(
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        data_prefix=dict(img_path='JPEGImages', seg_map_path='SegmentationClass'),
        ann_file='ImageSets/Segmentation/val.txt'))
test_dataloader = val_dataloader
