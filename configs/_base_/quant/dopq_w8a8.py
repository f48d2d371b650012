# DopQ-ViT: TanQ post-Softmax (calibrated on the attn @ v error) + MOSF LayerNorm fold, W8/A8.
# Owns the top-level key `quant` (see mmdopq.recipe.QuantRecipe for every key).
# Ablations need no base of their own: `--recipe tanq_only|mosf_only`, or another fold rule
# with `--cfg-options model.quant.reparam_rule=mean|median` (mmdopq-quantize options).
quant = dict(
    recipe='dopq',
    wbits=8,
    abits=8,
    scope='whole',  # 'whole' detector (published protocol) or 'backbone'
    post_softmax='tan',
    softmax_objective='output',
    reparam_rule='mad',
    weight_method='percentile',
    act_method='percentile',
    patch_embed_abits=8,
    seed=0,
)
