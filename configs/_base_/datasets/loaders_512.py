# The dataloaders every dataset config shares: 4 images per process for training (infinite
# shuffled sampler), 1 for validation/testing, with the 512x512 pipelines. A dataset config
# inherits this and sets only its dataset: type, data_root and folders.
_base_ = ['./pipelines_512.py']
train_dataloader = dict(
    batch_size=4,
    num_workers=4,
    persistent_workers=True,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(pseudo_mask_dir=None, pipeline={{_base_.train_pipeline}}))
val_dataloader = dict(
    batch_size=1,
    num_workers=4,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(pipeline={{_base_.test_pipeline}}))
test_dataloader = val_dataloader
