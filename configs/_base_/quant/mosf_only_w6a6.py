# Ablation: DopQ-ViT's MOSF LayerNorm fold on top of RepQ-ViT, W6/A6:
# RepQ-ViT's log-sqrt2 post-Softmax quantizer, no TanQ.
# Owns the top-level key `quant` (see mmdopq.adapters.QuantRecipe for every key).
quant = dict(
    recipe='mosf_only',
    wbits=6,
    abits=6,
    scope='whole',  # 'whole' detector (published protocol) or 'backbone'
    post_softmax='log_sqrt2',
    softmax_objective='tensor',
    reparam_rule='mad',
    weight_method='percentile',
    act_method='percentile',
    patch_embed_abits=8,
    seed=0,
)
