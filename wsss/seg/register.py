"""Import side effect: registers the project's datasets, mask-loading and rescaling transforms,
DeepLabV2 head, multi-scale segmentor, Caffe ResNet, strict pretrained init, deeplab-pytorch's lr
schedule, metric, result-table
hook, test-protocol loops and VOC test export hook in mmseg's registries, and lets mmengine's own
checkpoint classes through ``torch.load``'s weights-only check. Configs import it through
``custom_imports = dict(imports=['wsss.seg.register'])``."""
# registration by decorators, on import
from wsss.seg import (caffe_resnet, datasets, heads, loops, lr_schedule, metric, msc,  # noqa: F401
                      pretrained, scale_choice, voc_export)  # noqa: F401
from wsss.seg.compat import allow_mmengine_checkpoints

allow_mmengine_checkpoints()
