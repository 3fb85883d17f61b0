"""Import side effect: registers the project's datasets, mask-loading transform, DeepLabV2
head, metric, result-table hook, test-protocol loops and VOC test export hook in mmseg's
registries, and lets mmengine's own checkpoint classes through ``torch.load``'s weights-only
check. Configs import it through ``custom_imports = dict(imports=['wsss.seg.register'])``."""
from wsss.seg import datasets, heads, loops, metric, voc_export  # noqa: F401  (registration by decorators)
from wsss.seg.compat import allow_mmengine_checkpoints

allow_mmengine_checkpoints()
