# RepQ-ViT: log-sqrt2 post-Softmax + exact mean-scale LayerNorm fold, W4/A4.
# Owns the top-level key `quant` (see mmdopq.recipe.QuantRecipe for every key).
# Ablations need no base of their own: `--recipe tanq_only|mosf_only`, or another fold rule
# with `--cfg-options model.quant.reparam_rule=mean|median` (mmdopq-quantize options).
quant = dict(
    recipe='repq',
    wbits=4,
    abits=4,
    scope='whole',  # 'whole' detector (published protocol) or 'backbone'
    post_softmax='log_sqrt2',
    softmax_objective='tensor',
    reparam_rule='mean',
    weight_method='percentile',
    act_method='percentile',
    patch_embed_abits=8,
    seed=0,
)
