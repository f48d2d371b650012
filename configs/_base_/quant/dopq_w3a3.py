# DopQ-ViT: TanQ post-Softmax (calibrated on the attn @ v error) + MOSF LayerNorm fold, W3/A3.
# Owns the top-level key `quant` (see mmdopq.adapters.QuantRecipe for every key).
quant = dict(
    recipe='dopq',
    wbits=3,
    abits=3,
    scope='whole',  # 'whole' detector (published protocol) or 'backbone'
    post_softmax='tan',
    softmax_objective='output',
    reparam_rule='mad',
    weight_method='percentile',
    act_method='percentile',
    patch_embed_abits=8,
    seed=0,
)
