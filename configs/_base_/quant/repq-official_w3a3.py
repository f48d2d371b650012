# The official RepQ-ViT code (zkkli/RepQ-ViT), W3/A3: the repq recipe plus the official choices
# where mmdopq deliberately differs (docs/method.md, "Parity with the official RepQ-ViT code"):
# one quantized calibration pass (calib_mode='sequential'), torch.quantile's linear percentiles
# over the whole tensor (percentile_mode='linear', no subsample) and the fold's zero point
# mean(z) left fractional (fold_zero_point='fractional').
# Owns the top-level key `quant`. Pair it with the official data: the first val2017 image for
# detection (../calib/repq_protocol_val1.py), crop 0.875 for DeiT (imagenet/_base_/).
quant = dict(
    recipe='repq_official',
    wbits=3,
    abits=3,
    scope='whole',
    post_softmax='log_sqrt2',
    softmax_objective='tensor',
    reparam_rule='mean',
    calib_mode='sequential',
    percentile_mode='linear',
    fold_zero_point='fractional',
    weight_method='percentile',
    act_method='percentile',
    patch_embed_abits=8,
    seed=0,
)
