# Runtime shared by every stage-3 config (mmseg 1.x / mmengine style).
default_scope = 'mmseg'
# registers the project's datasets, DeepLabV2 head, metric and table hook
custom_imports = dict(imports=['wsss.seg.register'], allow_failed_imports=False)
env_cfg = dict(
    cudnn_benchmark=True,
    mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
    dist_cfg=dict(backend='nccl'))
vis_backends = [dict(type='LocalVisBackend')]
visualizer = dict(type='SegLocalVisualizer', vis_backends=vis_backends, name='visualizer')
log_processor = dict(by_epoch=False)
log_level = 'INFO'
load_from = None
resume = False
randomness = dict(seed=0)
# writes WORK_DIR/results_{val,test}.{json,md} after every evaluation;
# configs with published numbers pass them as `reference`
custom_hooks = [dict(type='SegResultsTableHook')]
val_evaluator = dict(type='WSSSIoUMetric')
test_evaluator = val_evaluator
