# CLIP-ES's DeepLab-v2 schedule, i.e. deeplab-pytorch's configs/voc12.yaml and main.py: 20k
# iterations (SOLVER.ITER_MAX, as schedule_20k.py) of SGD with poly decay to 0 and
# deeplab-pytorch's lr groups (deeplab_v2_lr_mult.py), the poly lr recomputed every 10 iterations
# as deeplab-pytorch does (SteppedPolyLR: wsss/seg/lr_schedule.py).
_base_ = ['./schedule_20k.py', './deeplab_v2_lr_mult.py']
optim_wrapper = dict(
    optimizer=dict(
        type='SGD',
        lr=2.5e-4,  # configs/voc12.yaml SOLVER.LR
        momentum=0.9,  # configs/voc12.yaml SOLVER.MOMENTUM
        weight_decay=5e-4),  # configs/voc12.yaml SOLVER.WEIGHT_DECAY
    paramwise_cfg={{_base_.deeplab_v2_paramwise_cfg}})  # main.py get_params 1x/10x/20x
param_scheduler = [
    # configs/voc12.yaml SOLVER.POLY_POWER 0.9 over SOLVER.ITER_MAX 20000, recomputed every
    # SOLVER.LR_DECAY 10 iterations (main.py, libs/utils/lr_scheduler.py PolynomialLR)
    dict(type='SteppedPolyLR', iter_max=20000, power=0.9, step_size=10, begin=0, end=20000, by_epoch=False)
]
