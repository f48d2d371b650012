"""Pure-torch LayerNorm reparameterization (RepQ-ViT fold, MOSF)."""

from .layernorm_reparam import DEFAULT_K_GRID, RULES, FoldResult, reparameterize_layernorm

__all__ = ['DEFAULT_K_GRID', 'RULES', 'FoldResult', 'reparameterize_layernorm']
