# DopQ-ViT, MOSF rule ablation, W4/A4: TanQ post-Softmax + the exact mean-scale fold
# (RepQ-ViT's rule) instead of MOSF. Same quantizers as tanq_only_<bits>.py; kept under
# the dopq recipe so the rule ablation reads dopq / dopq-mean / dopq-median.
# Owns the top-level key `quant` (see mmdopq.adapters.QuantRecipe for every key).
quant = dict(
    recipe='dopq',
    wbits=4,
    abits=4,
    scope='whole',  # 'whole' detector (published protocol) or 'backbone'
    post_softmax='tan',
    softmax_objective='output',
    reparam_rule='mean',
    weight_method='percentile',
    act_method='percentile',
    patch_embed_abits=8,
    seed=0,
)
