"""What an adapter declares about a model, and the calibration steps run on it.

An adapter swaps float layers for quantized ones and records, explicitly, every
quantization site and every LayerNorm -> consumer pair in a :class:`QuantPlan`.
The plan then drives calibration, independent of the architecture:

1. :meth:`QuantPlan.calibrate_sites` — after calibration data ran through the
   model in ``calib`` mode, set every quantizer from what it observed (after a
   sequential pass in ``calib_seq`` mode the sites calibrated themselves, each on
   the output of the quantized sites before it; this step checks they all ran);
2. :meth:`QuantPlan.reparameterize` — fold the per-channel post-LN quantizers
   into per-tensor ones (RepQ-ViT rule or MOSF);
3. :meth:`QuantPlan.recalibrate` — re-initialise the weights of the rewritten
   consumers and check that every declared site is calibrated.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import torch
from torch import Tensor, nn

from .nn import QuantLinear, QuantMatMul, QuantModuleMixin, set_quant_mode
from .quantizers import BaseQuantizer, SampleCollector, UniformQuantizer
from .recipe import QuantRecipe
from .reparam import FoldResult, reparameterize_layernorm

#: Groups of :meth:`QuantPlan.components`.
COMPONENTS = ('post_softmax', 'post_layernorm', 'other_act', 'weight')
#: Kinds of reconstruction units (see :meth:`QuantPlan.add_unit`).
UNIT_KINDS = ('block', 'neck', 'head', 'roi')


class QuantizerFactory:
    """Builds the quantizers of one model's sites from a recipe.

    The recipe is immutable and shared; what belongs to the model being quantized lives
    here: every quantizer gets its own reproducible seed (of its calibration subsample),
    ``recipe.seed * 100003 + n`` for the ``n``-th quantizer built. An adapter passes one
    factory to everything it declares, so the seeds follow the build order of the model.

    Args:
        recipe: The settings the quantizers are built with.
    """

    def __init__(self, recipe: QuantRecipe) -> None:
        self.recipe = recipe
        self._built = 0

    def next_seed(self) -> int:
        """The seed of the next quantizer (distinct for every quantizer of the model)."""
        self._built += 1
        return self.recipe.seed * 100003 + self._built

    def weight(self) -> BaseQuantizer:
        """Per-output-channel weight quantizer."""
        return self.recipe.weight(seed=self.next_seed())

    def act(self, bits: Optional[int] = None, per_channel: bool = False) -> BaseQuantizer:
        """Activation quantizer (``bits=None``: the recipe's ``abits``)."""
        return self.recipe.act(bits, per_channel, seed=self.next_seed())

    def patch_embed_act(self) -> BaseQuantizer:
        """Input quantizer of a patch embedding (``recipe.patch_embed_abits``)."""
        return self.act(bits=self.recipe.patch_embed_abits)

    def post_ln_act(self) -> BaseQuantizer:
        """Input quantizer of a LayerNorm consumer: per channel until folded."""
        return self.act(per_channel=True)

    def softmax(self) -> BaseQuantizer:
        """Post-Softmax (attention map) quantizer."""
        return self.recipe.softmax(seed=self.next_seed())

    def attention_matmuls(self) -> tuple[QuantMatMul, QuantMatMul]:
        """The two attention matmul sites: ``q @ k^T`` and ``attn @ v``.

        ``q``, ``k`` and ``v`` go through :meth:`act`; the attention map through
        :meth:`softmax`, calibrated on the recipe's ``softmax_objective``.
        """
        recipe = self.recipe
        qk = QuantMatMul(self.act(), self.act(), a_objective=recipe.qk_objective)
        av = QuantMatMul(self.softmax(), self.act(), a_objective=recipe.softmax_objective)
        return qk, av


@dataclass
class NormPair:
    """A LayerNorm and the Linear layers that read its output.

    Attributes:
        name: Qualified name of the norm.
        norm: The norm module.
        consumers: Qualified names of the consuming :class:`QuantLinear` layers.
        zero_image_owner: Module with an ``input_offset`` buffer that must hold
            the folded image of 0 (Swin pads the normalized tokens), or None.
    """

    name: str
    norm: nn.LayerNorm
    consumers: list[str]
    zero_image_owner: Optional[nn.Module] = None


@dataclass
class RoiSource:
    """Where an RoI head's input comes from, for a target on the float model's features.

    The head is called on the output of ``pooler(feats, rois)`` (e.g. mmdet's RoI
    extractor), ``feats`` a sequence taken from the output of ``features`` (e.g. the FPN),
    which runs once per forward pass of the model.

    Attributes:
        features: The module whose output holds the feature maps.
        pooler: The module that pools them at the regions; called as ``pooler(feats, rois)``.
    """

    features: nn.Module
    pooler: nn.Module


@dataclass
class QuantPlan:
    """Declared quantization sites of a model and the calibration steps on them.

    Args:
        factory: The quantizer factory of the model (its recipe is the plan's); plans of
            parts of one model (backbone, heads) share it, see :meth:`extend`.
    """

    factory: QuantizerFactory
    sites: dict[str, QuantModuleMixin] = field(default_factory=dict)
    norm_pairs: list[NormPair] = field(default_factory=list)
    post_softmax_sites: list[str] = field(default_factory=list)
    fold_results: dict[str, FoldResult] = field(default_factory=dict)
    channel_scale_stats: dict[str, dict] = field(default_factory=dict)
    #: Reconstruction units in forward order, ``(name, module)`` (see :meth:`add_unit`).
    units: list[tuple[str, nn.Module]] = field(default_factory=list)
    #: Kind of each unit (:data:`UNIT_KINDS`): ``'block'`` is always reconstructed, the
    #: others on ask.
    unit_kinds: dict[str, str] = field(default_factory=dict)
    #: Where each ``'roi'`` unit's input comes from, when the adapter knows it (see
    #: :class:`RoiSource`).
    roi_sources: dict[str, RoiSource] = field(default_factory=dict)
    _norm_inputs: dict[str, SampleCollector] = field(default_factory=dict)
    _hooks: list = field(default_factory=list)
    _sequential: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.factory, QuantizerFactory):
            raise TypeError(
                f'QuantPlan takes a QuantizerFactory, got {type(self.factory).__name__}; '
                'wrap a recipe as QuantizerFactory(recipe)'
            )

    @property
    def recipe(self) -> QuantRecipe:
        """The recipe the sites were built with."""
        return self.factory.recipe

    # -- declaration -------------------------------------------------------------
    def add(self, name: str, layer: QuantModuleMixin) -> QuantModuleMixin:
        """Declare ``layer`` as the quantization site ``name``; returns it."""
        if name in self.sites:
            raise ValueError(f'quantization site {name!r} declared twice')
        self.sites[name] = layer
        for qname, q in layer.quantizers():
            q.name = f'{name}.{qname}'
        return layer

    def add_pair(
        self,
        name: str,
        norm: nn.LayerNorm,
        consumers: list[str],
        zero_image_owner: Optional[nn.Module] = None,
    ) -> None:
        """Declare a LayerNorm -> consumers pair for reparameterization."""
        for c in consumers:
            lin = self.sites.get(c)
            if not isinstance(lin, QuantLinear):
                raise ValueError(f'{name}: consumer {c!r} is not a declared QuantLinear site')
            if lin.bias is None:
                # The fold needs a bias (b' = b - W t). Add a zero one at build time so
                # float and quantized state dicts have the same keys.
                lin.bias = nn.Parameter(lin.weight.new_zeros(lin.out_features))
        self.norm_pairs.append(NormPair(name, norm, list(consumers), zero_image_owner))

    def add_unit(
        self,
        name: str,
        module: nn.Module,
        kind: str = 'block',
        roi_source: Optional[RoiSource] = None,
    ) -> nn.Module:
        """Declare ``module`` as a reconstruction unit (call in forward order); returns it.

        Args:
            name: Qualified name of the module.
            module: The unit: called with the inputs it sees in the model.
            kind: One of :data:`UNIT_KINDS`: ``'block'`` (patch embedding, transformer
                block, patch merging, classifier head), ``'neck'`` (a detector's neck) or
                ``'head'`` (a detector's dense head, e.g. the RPN head), reconstructed only
                when asked, or ``'roi'``: a head called on regions of interest (box and
                mask heads), reconstructed on ask against the float head on the same
                regions (the float model's regions differ).
            roi_source: An ``'roi'`` unit's feature maps and pooler; with it the unit can
                be reconstructed against the float model's features pooled at the
                quantized model's regions (``roi_target='float'``).
        """
        if kind not in UNIT_KINDS:
            raise ValueError(f'unit {name!r}: kind={kind!r}; choose from {UNIT_KINDS}')
        if name in self.unit_kinds:
            raise ValueError(f'reconstruction unit {name!r} declared twice')
        if roi_source is not None and kind != 'roi':
            raise ValueError(f'unit {name!r}: roi_source given for a {kind!r} unit')
        self.units.append((name, module))
        self.unit_kinds[name] = kind
        if roi_source is not None:
            self.roi_sources[name] = roi_source
        return module

    def extend(self, other: QuantPlan) -> None:
        """Merge the declarations of another plan (e.g. backbone + heads)."""
        for name, layer in other.sites.items():
            self.add(name, layer)
        for name, module in other.units:
            self.add_unit(name, module, other.unit_kinds[name], other.roi_sources.get(name))
        self.norm_pairs.extend(other.norm_pairs)
        self.post_softmax_sites.extend(other.post_softmax_sites)

    # -- state ---------------------------------------------------------------
    def components(self) -> dict[str, list[BaseQuantizer]]:
        """Every quantizer of the plan, grouped by the part of the recipe that sets it.

        Keys, in this order (each present, possibly empty):

        * ``'post_softmax'``: the attention maps (the ``a`` operand of the post-Softmax
          matmuls) -- the quantizer TanQ replaces;
        * ``'post_layernorm'``: the inputs of the LayerNorm consumers -- what the fold
          rule (RepQ-ViT's mean, MOSF) sets;
        * ``'other_act'``: every other activation quantizer;
        * ``'weight'``: the weight quantizers.

        Raises:
            ValueError: A declared post-Softmax site is not a :class:`QuantMatMul`.
        """
        groups: dict[str, list[BaseQuantizer]] = {c: [] for c in COMPONENTS}
        role: dict[int, str] = {}
        for name in self.post_softmax_sites:
            site = self.sites.get(name)
            if not isinstance(site, QuantMatMul):
                raise ValueError(f'post-Softmax site {name!r} is not a declared QuantMatMul')
            role[id(site.quantizer_a)] = 'post_softmax'
        for pair in self.norm_pairs:
            for c in pair.consumers:
                role[id(self.sites[c].input_quantizer)] = 'post_layernorm'
        for layer in self.sites.values():
            for qname, q in layer.quantizers():
                default = 'weight' if qname == 'weight_quantizer' else 'other_act'
                groups[role.get(id(q), default)].append(q)
        return groups

    @property
    def is_calibrated(self) -> bool:
        return all(layer.is_calibrated for layer in self.sites.values())

    def uncalibrated_sites(self) -> list[str]:
        return [n for n, layer in self.sites.items() if not layer.is_calibrated]

    # -- step 0: collect -------------------------------------------------------------
    def start_calibration(self, model: nn.Module, sequential: bool = False) -> None:
        """Switch to ``calib`` mode and start collecting norm inputs (for MOSF).

        Args:
            model: The model that holds the sites.
            sequential: Put the sites in ``calib_seq`` mode instead (RepQ-ViT's order):
                in the next forward pass every site calibrates at its first call, on what
                the quantized sites before it produce, and quantizes from then on. Run
                the calibration images through as one batch.
        """
        self.stop_calibration()
        for layer in self.sites.values():
            for _, q in layer.quantizers():
                q.collector.clear()
            pairs = getattr(layer, 'pairs', None)  # QuantMatMul's paired sample
            if pairs is not None:
                pairs.clear()
        self._sequential = sequential
        set_quant_mode(model, 'calib_seq' if sequential else 'calib')
        if self.recipe.reparam_rule == 'mad':
            for pair in self.norm_pairs:
                # MOSF scores every cap candidate with the consumers' matmuls on these
                # rows: half the activation budget keeps that cheap (>= 256 tokens).
                coll = SampleCollector(self.recipe.max_samples // 2, seed=self.recipe.seed)
                self._norm_inputs[pair.name] = coll
                self._hooks.append(
                    pair.norm.register_forward_pre_hook(_collect_into(coll, pair.name))
                )

    def stop_calibration(self) -> None:
        for h in self._hooks:
            h.remove()
        self._hooks.clear()

    # -- step 1 --------------------------------------------------------------------
    @torch.no_grad()
    def calibrate_sites(self) -> None:
        """Set every site's quantizers from what it observed.

        After a sequential pass (:meth:`start_calibration` with ``sequential=True``) the
        sites calibrated themselves; this only checks that every one of them was reached.
        """
        self.stop_calibration()
        if self._sequential:
            missed = [n for n, layer in self.sites.items() if layer.quant_mode == 'calib_seq']
            if missed:
                raise ValueError(
                    f'{len(missed)} quantization sites saw no calibration data in the '
                    f'sequential pass (first: {missed[0]!r}); are they on the forward path '
                    'of the model?'
                )
            return
        for name, layer in self.sites.items():
            for _, q in layer.quantizers():
                if (
                    q.enabled
                    and q.collector.empty
                    and q is not getattr(layer, 'weight_quantizer', None)
                ):
                    raise ValueError(
                        f'quantization site {name!r} saw no calibration data '
                        f'({q.name}); is it on the forward path of the model?'
                    )
            layer.calibrate()

    # -- step 2 ----------------------------------------------------------------------
    @torch.no_grad()
    def reparameterize(self) -> dict[str, FoldResult]:
        """Fold every declared LayerNorm pair with the recipe's rule."""
        rule = self.recipe.reparam_rule
        if rule == 'none':
            return {}
        for pair in self.norm_pairs:
            consumers = [self.sites[c] for c in pair.consumers]
            first = consumers[0].input_quantizer
            if not isinstance(first, UniformQuantizer) or first.scale.dim() != 1:
                raise ValueError(
                    f'{pair.name}: consumer input quantizer is not per channel; '
                    'was the model already reparameterized?'
                )
            # the per-channel scales the rules choose from (kept for reports and plots)
            self.channel_scale_stats[pair.name] = dict(
                channel_scale_mean=float(first.scale.mean()),
                channel_scale_median=float(first.scale.median()),
                channel_scale_max=float(first.scale.max()),
            )
            calib = None
            if rule == 'mad':
                coll = self._norm_inputs.pop(pair.name, None)
                if coll is None or coll.empty:
                    raise ValueError(f'{pair.name}: no norm inputs were collected for MOSF')
                calib = coll.take()
            res = reparameterize_layernorm(
                pair.norm,
                consumers,
                first.scale,
                first.zero_point,
                rule=rule,
                calib_input=calib,
                wbits=self.recipe.wbits,
                abits=self.recipe.abits,
                k_grid=self.recipe.mad_k_grid,
                weight_quantizer=lambda _: self.factory.weight(),
                zero_point_rule=self.recipe.fold_zero_point,
            )
            exact = self.recipe.fold_zero_point == 'round'
            for lin in consumers:
                lin.input_quantizer.set_params(res.scale, res.zero_point, round_zero_point=exact)
            if pair.zero_image_owner is not None:
                pair.zero_image_owner.input_offset.copy_(res.zero_image)
            self.fold_results[pair.name] = res
        self._norm_inputs.clear()
        return self.fold_results

    # -- step 3 ----------------------------------------------------------------------
    @torch.no_grad()
    def recalibrate(self, model: nn.Module) -> None:
        """Re-initialise the weights of rewritten consumers; check every site; quant mode."""
        for pair in self.norm_pairs:
            if pair.name in self.fold_results:
                for c in pair.consumers:
                    lin = self.sites[c]
                    lin.weight_quantizer.calibrate(lin.weight.detach())
        missing = self.uncalibrated_sites()
        if missing:
            raise RuntimeError(
                f'{len(missing)} declared quantization sites are not calibrated: {missing[:10]}'
            )
        set_quant_mode(model, 'quant')

    def summary(self) -> dict:
        """Counts and MOSF choices, for logs and results."""
        return dict(
            sites=len(self.sites),
            post_softmax_sites=len(self.post_softmax_sites),
            norm_pairs=len(self.norm_pairs),
            mosf={
                n: dict(
                    k=r.k,
                    n_capped=r.n_capped,
                    scale=float(r.scale),
                    **self.channel_scale_stats.get(n, {}),
                )
                for n, r in self.fold_results.items()
            },
        )


def _collect_into(coll: SampleCollector, name: str):
    def hook(module: nn.Module, args: tuple) -> None:
        x: Tensor = args[0]
        if not torch.isfinite(x).all():
            raise ValueError(
                f'{name}: NaN/Inf input to the LayerNorm during calibration '
                f'(shape {tuple(x.shape)})'
            )
        coll.add(x.detach().reshape(-1, x.shape[-1]))

    return hook
