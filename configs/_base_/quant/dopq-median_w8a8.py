# DopQ-ViT, MOSF rule ablation, W8/A8: TanQ post-Softmax + the exact median-scale fold
# instead of MOSF. With an exact fold the choice of the common scale changes nothing
# but zero-point rounding (mmdopq.reparam.layernorm_reparam), so it matches dopq-mean.
# Owns the top-level key `quant` (see mmdopq.adapters.QuantRecipe for every key).
quant = dict(
    recipe='dopq',
    wbits=8,
    abits=8,
    scope='whole',  # 'whole' detector (published protocol) or 'backbone'
    post_softmax='tan',
    softmax_objective='output',
    reparam_rule='median',
    weight_method='percentile',
    act_method='percentile',
    patch_embed_abits=8,
    seed=0,
)
