# Stage 2 of the reference Swin classifier: a second warmup + cosine cycle on the 'easy' preset
# from stage 1's last checkpoint (work_dirs/ref_swin_ft/epoch_30.pth: the detector-initialised
# fine-tuning of swin-ref-p4-w7_synthetic-cls_stage1.py). This stage's epoch_40.pth, published
# (fp16) as work_dirs/ref_swin_ft_s2/stage2_fp16.pth, is where stage 3 (the reference config,
# on the 'faint' preset) starts.
# CPU sessions are short, so the reference models are trained in stages; each stage's command
# and result are in configs/reference/README.md.
_base_ = ['./swin-ref-p4-w7_synthetic-cls_stage1.py']

load_from = 'work_dirs/ref_swin_ft/epoch_30.pth'

max_epochs = 40
warmup_epochs = 2
train_cfg = dict(max_epochs=max_epochs, val_interval=5)
param_scheduler = [
    dict(
        type='LinearLR',
        start_factor=0.01,
        by_epoch=True,
        begin=0,
        end=warmup_epochs,
        convert_to_iter_based=True,
    ),
    dict(
        type='CosineAnnealingLR',
        T_max=max_epochs - warmup_epochs,
        eta_min=1e-5,
        by_epoch=True,
        begin=warmup_epochs,
        end=max_epochs,
        convert_to_iter_based=True,
    ),
]
randomness = dict(seed=1)
