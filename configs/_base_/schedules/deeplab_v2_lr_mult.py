# deeplab-pytorch's learning-rate groups (main.py get_params, as CLIP-ES trains DeepLab-v2):
# backbone convolutions at the base lr, the ASPP weights at 10x and the ASPP biases at 20x
# without weight decay. Configs use it as optim_wrapper.paramwise_cfg (mmengine picks the
# longest matching key, so a bias key wins over 'decode_head').
aspp_branches = 4  # configs/voc12.yaml MODEL.ATROUS_RATES: decode_head.aspp.0..3
deeplab_v2_paramwise_cfg = dict(custom_keys={
    'decode_head': dict(lr_mult=10.0),  # main.py: "10x" group, ASPP weights, weight decay kept
    # main.py: "20x" group, ASPP biases, weight_decay 0.0
    **{f'decode_head.aspp.{i}.bias': dict(lr_mult=20.0, decay_mult=0.0) for i in range(aspp_branches)},
})
