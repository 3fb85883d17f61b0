# The schedule this project used before following deeplab-pytorch (not CLIP-ES's; see
# clip_es_20k.py): 20k iterations, SGD lr 2e-4, x10 on every decode-head parameter (biases
# decayed), momentum 0.9, weight decay 5e-4, poly decay with power 0.9 to 0.
_base_ = ['./schedule_20k.py']
optim_wrapper = dict(
    optimizer=dict(type='SGD', lr=2e-4, momentum=0.9, weight_decay=5e-4),
    paramwise_cfg=dict(custom_keys={'decode_head': dict(lr_mult=10.0)}))
param_scheduler = [
    dict(type='PolyLR', eta_min=0.0, power=0.9, begin=0, end=20000, by_epoch=False)
]
