# DopQ-ViT: TanQ post-Softmax (calibrated on the attn @ v error) + MOSF LayerNorm fold, W6/A6.
# Owns the top-level key `quant` (see mmdopq.adapters.QuantRecipe for every key).
quant = dict(
    recipe='dopq',
    wbits=6,
    abits=6,
    scope='whole',  # 'whole' detector (published protocol) or 'backbone'
    post_softmax='tan',
    softmax_objective='output',
    reparam_rule='mad',
    weight_method='percentile',
    act_method='percentile',
    patch_embed_abits=8,
    seed=0,
)
