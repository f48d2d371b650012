# DopQ-ViT W4/A4 of the reference classifier (vit-ref-p8_synthetic-cls.py). Other recipes
# and bit widths:
#   python tools/quantize.py THIS_CONFIG CKPT --recipe repq --bits w6a6 [--seed 1]
_base_ = [
    './vit-ref-p8_synthetic-cls.py',
    '../_base_/quant/dopq_w4a4.py',
    './_base_/synthetic_cls_calib32.py',
]
# Block reconstruction is off; `--reconstruct` switches it on with these settings: 1000
# iterations per unit beat 300 by 1.4 top-1 on the held-out tuning split (DopQ W4A4), in
# 8-9 minutes at one thread (docs/reconstruction.md).
reconstruct = dict(enabled=False, iters=1000)
model = dict(
    _delete_=True,
    type='mmdopq.QuantizedModel',
    scope='mmpretrain',
    architecture=_base_.architecture,
    quant=dict(_base_.quant, reconstruct=reconstruct),
)
