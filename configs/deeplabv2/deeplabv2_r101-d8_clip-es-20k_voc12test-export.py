# The CLIP-ES DeepLab-v2 on the PASCAL VOC 2012 test images (no public ground truth): writes the
# predictions (published test protocol) as WORK_DIR/results/VOC2012/Segmentation/comp6_test_cls/
# ID.png for the evaluation server instead of scoring them:
#   python tools/test_seg.py THIS_CONFIG CHECKPOINT --work-dir DIR
#   data/VOCdevkit/VOC2012/JPEGImages/ID.jpg                  (the test images)
#   data/VOCdevkit/VOC2012/ImageSets/Segmentation/test.txt    (1,456 test IDs)
_base_ = ['./deeplabv2_r101-d8_clip-es-20k_voc12aug-321x321.py']
test_dataloader = dict(
    dataset=dict(
        data_prefix=dict(_delete_=True, img_path='JPEGImages'),
        ann_file='ImageSets/Segmentation/test.txt',
        pipeline=[dict(type='LoadImageFromFile'), dict(type='PackSegInputs')]))
test_evaluator = []
custom_hooks = [dict(type='VOCTestExportHook', competition='comp6')]
