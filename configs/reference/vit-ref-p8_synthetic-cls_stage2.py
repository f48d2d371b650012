# Stage 2 of the reference ViT: a second, shorter warmup + cosine cycle from the stage-1 weights
# (the 60-epoch from-scratch run of the base config, published in fp16 with
#   python tools/model_converters/publish_reference.py work_dirs/ref_vit/epoch_60.pth \
#       work_dirs/ref_vit/stage1_fp16.pth
# sha256 2de45447...73703bb). This stage's epoch_40.pth (76.25 %)
# was the reference checkpoint until stage 3 (vit-ref-p8_synthetic-cls_stage3.py) started from it.
# CPU sessions are short, so the reference models are trained in stages; each stage's command
# and result are in configs/reference/README.md.
_base_ = ['./vit-ref-p8_synthetic-cls.py']

load_from = 'work_dirs/ref_vit/stage1_fp16.pth'

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
