# Ablation: DopQ-ViT's TanQ post-Softmax (attn @ v error) on top of RepQ-ViT, W3/A3:
# RepQ-ViT's exact mean-scale LayerNorm fold, no MOSF.
# Owns the top-level key `quant` (see mmdopq.adapters.QuantRecipe for every key).
quant = dict(
    recipe='tanq_only',
    wbits=3,
    abits=3,
    scope='whole',  # 'whole' detector (published protocol) or 'backbone'
    post_softmax='tan',
    softmax_objective='output',
    reparam_rule='mean',
    weight_method='percentile',
    act_method='percentile',
    patch_embed_abits=8,
    seed=0,
)
