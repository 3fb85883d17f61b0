# The published test of CLIP-ES's DeepLab-v2 (deeplab-pytorch's main.py test + crf): images at
# their original size, the network at scales 0.5, 0.75 and 1.0 with the logits fused by max,
# then the dense CRF (wsss.seg.protocol's 'published' protocol owns the numbers). The results
# file holds single-scale, multi-scale and multi-scale + CRF mIoU. A config using it sets
#   test_pipeline = {{_base_.published_test_pipeline}}
#   val_cfg = {{_base_.published_val_cfg}}
#   test_cfg = {{_base_.published_test_cfg}}
# (and its val/test dataloaders' pipeline to test_pipeline); tools/test_seg.py --protocol single
# gives the fast one-scale test instead.
published_test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadCheckedAnnotations'),
    dict(type='PackSegInputs'),
]
published_val_cfg = dict(type='ProtocolValLoop', protocol='published')
published_test_cfg = dict(type='ProtocolTestLoop', protocol='published')
