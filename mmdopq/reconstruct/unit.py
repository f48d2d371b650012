"""Reconstruct one unit (a block): learn its weight rounding and activation steps."""

from __future__ import annotations

import math
import time
from typing import Any, Optional, Union

import torch
from torch import Tensor, nn
from torch.utils._pytree import tree_flatten

from ..nn import QuantModuleMixin, WeightActQuantMixin
from .adaround import AdaRoundWeight, is_adaround_quantizer
from .cache import UnitCache
from .lsq import LSQActQuantizer, is_lsq_quantizer
from .post_softmax import learned_post_softmax
from .progress import ProgressLine
from .settings import ReconstructSettings
from .ste_weight import SteWeight


def _float_leaves(tree: Any) -> list[Tensor]:
    return [t for t in tree_flatten(tree)[0] if isinstance(t, Tensor) and t.is_floating_point()]


def squared_error(out: Any, target: Any) -> Tensor:
    """Sum of squared differences over every floating tensor of two outputs."""
    outs, tgts = _float_leaves(out), _float_leaves(target)
    if len(outs) != len(tgts):
        raise ValueError(f'unit output has {len(outs)} tensors, its target {len(tgts)}')
    return sum(((o.float() - t.float()) ** 2).sum() for o, t in zip(outs, tgts))


class UnitReconstructor:
    """Optimise one unit against its float output, then write the result into the model.

    While it runs, every weight site of the unit whose weight quantizer is a calibrated
    per-channel :class:`~mmdopq.quantizers.UniformQuantizer` computes its weight with
    :class:`AdaRoundWeight` (or :class:`SteWeight` with ``weight_mode='ste'``; an instance
    attribute ``quantized_weight`` overrides the layer's method), and every calibrated
    uniform activation quantizer of the unit except the ``fixed`` ones (post-Softmax) is
    replaced by an :class:`LSQActQuantizer` child;
    with ``learn_post_softmax`` the ``fixed`` TanQ / log-sqrt2 quantizers learn their
    parameters too (:mod:`.post_softmax`). The quantizer classes are not modified.

    The loss is the output MSE divided by the mean square of the target over the cache (a
    relative error, so that ``reg_weight`` does not depend on the scale of the unit's
    output) plus ``reg_weight`` times the mean rounding regulariser after the warm-up.
    Every ``eval_every`` iterations the *hardened* state (rounding ``h >= 0.5``, learned
    steps, no QDrop) is scored on a fixed subset of the cache; the best one, or the
    calibrated state when nothing beats it, is what is kept. Early stopping ends the
    optimisation after ``patience`` evaluations past the warm-up without a relative
    improvement of ``min_delta``, except while AdaRound's regulariser anneals (it anneals to
    the last iteration, and the hardened state improves only as it does).

    Writing back: a weight becomes ``s * (q - z)`` (its hardened integers on the
    quantizer's unchanged grid, so the layer's plain fake quantization reproduces it
    bit for bit) and a step goes into the quantizer's ``scale`` buffer. The final loss
    is measured on every cached sample with the plain model; if it is above the
    calibration-only loss, the unit is restored (``reverted=True``).

    Args:
        name: The unit's name.
        module: The unit (called with the cached arguments).
        fixed: Quantizers that keep their calibration (the post-Softmax ones).
        settings: Reconstruction settings.
        seed: Seed of the sampling and of QDrop.
    """

    def __init__(
        self,
        name: str,
        module: nn.Module,
        fixed: set[int],
        settings: ReconstructSettings,
        seed: int = 0,
    ) -> None:
        self.name = name
        self.module = module
        self.fixed = fixed
        self.settings = settings
        self.seed = seed
        self.hard = False
        self.weights: list[tuple[WeightActQuantMixin, Union[AdaRoundWeight, SteWeight]]] = []
        self.acts: list[tuple[nn.Module, str, LSQActQuantizer]] = []
        self.post: list[tuple[nn.Module, str, nn.Module]] = []
        self.original_weights: dict[int, tuple[WeightActQuantMixin, Tensor]] = {}

    # -- wrappers --------------------------------------------------------------------
    def _install(self, device: torch.device) -> None:
        s = self.settings
        gen = torch.Generator(device=device).manual_seed(self.seed)
        for _, layer in self.module.named_modules():
            if not isinstance(layer, QuantModuleMixin):
                continue
            if s.learn_weights and isinstance(layer, WeightActQuantMixin):
                if is_adaround_quantizer(layer.weight_quantizer):
                    kind = AdaRoundWeight if s.weight_mode == 'adaround' else SteWeight
                    ada = kind(layer.weight, layer.weight_quantizer)
                    layer.quantized_weight = self._weight_fn(ada)
                    self.weights.append((layer, ada))
            for qname, q in list(layer.quantizers()):
                if qname == 'weight_quantizer':
                    continue
                if id(q) in self.fixed:  # post-Softmax: calibrated unless asked to learn
                    learned = s.learn_post_softmax and learned_post_softmax(q, s.drop_prob, gen)
                    if learned:
                        setattr(layer, qname, learned)
                        self.post.append((layer, qname, learned))
                    continue
                if not is_lsq_quantizer(q):
                    continue
                lsq = LSQActQuantizer(q, s.drop_prob, gen, learn=s.learn_steps)
                setattr(layer, qname, lsq)
                self.acts.append((layer, qname, lsq))

    def _weight_fn(self, ada: AdaRoundWeight):
        def quantized_weight() -> Tensor:
            return ada(hard=self.hard)

        return quantized_weight

    def _remove(self) -> None:
        for layer, _ in self.weights:
            del layer.quantized_weight
        for layer, qname, wrapper in self.acts + self.post:
            setattr(layer, qname, wrapper.quantizer)

    # -- evaluation ----------------------------------------------------------------
    @torch.no_grad()
    def _loss(self, cache: UnitCache, indices=None) -> float:
        total = 0.0
        n = 0
        for args, kwargs, target in cache.batches(self.settings.batch_size, indices):
            total += float(squared_error(self.module(*args, **kwargs), target))
            n += sum(t.numel() for t in _float_leaves(target))
        return total / max(1, n) / self.norm

    def _set_drop(self, on: bool) -> None:
        for _, _, wrapper in self.acts + self.post:
            wrapper.train(on)

    def _snapshot(self) -> dict:
        return dict(
            h=[ada.hard_state() for _, ada in self.weights],
            steps=[lsq.step.detach().clone() for _, _, lsq in self.acts],
            post=[w.values() for _, _, w in self.post],
        )

    # -- the run ---------------------------------------------------------------------
    def run(self, cache: UnitCache, progress: Optional[ProgressLine] = None) -> dict:
        """Optimise, keep the best state, write it into the model; returns the record."""
        s = self.settings
        t0 = time.perf_counter()
        gen = torch.Generator().manual_seed(self.seed)
        sq = n = 0.0
        for _, _, target in cache.batches(s.batch_size):
            for t in _float_leaves(target):
                sq += float(t.float().pow(2).sum())
                n += t.numel()
        self.norm = max(sq / max(1.0, n), 1e-20)
        was_training = self.module.training
        self.module.eval()
        eval_idx = cache.subset(s.eval_images, gen)
        before = self._loss(cache)
        before_eval = before if s.eval_images == 0 else self._loss(cache, eval_idx)
        requires = {p: p.requires_grad for p in self.module.parameters()}
        for p in requires:
            p.requires_grad_(False)
        device = next(iter(_float_leaves(cache.get(0, torch.arange(1))[2]))).device
        best, best_loss, best_it, iters_run, evals = None, before_eval, 0, 0, []
        try:
            self._install(device)
            params_w = [p for _, ada in self.weights for p in ada.parameters()]
            params_s = [lsq.step for _, _, lsq in self.acts if lsq.step.requires_grad]
            params_p = [p for _, _, w in self.post for p in w.parameters()]
            groups = []
            if params_w:
                groups.append(dict(params=params_w, lr=s.lr_weight, kind='rounding'))
            if params_s:
                groups.append(dict(params=params_s, lr=s.lr_step, kind='step'))
            if params_p:
                groups.append(dict(params=params_p, lr=s.lr_post_softmax, kind='step'))
            if groups:
                best, best_loss, best_it, iters_run, evals = self._optimise(
                    cache, groups, gen, eval_idx, before_eval, progress
                )
        finally:
            self._remove()
            for p, r in requires.items():
                p.requires_grad_(r)
        changed = best is not None
        if changed:
            self._write(best)
        after = self._loss(cache)
        reverted = False
        if changed and after > before:
            self._restore()
            after, reverted = before, True
        self.module.train(was_training)
        return dict(
            loss_before=before,
            loss_after=after,
            iters=iters_run,
            best_iter=best_it,
            reverted=reverted,
            changed=changed and not reverted,
            samples=cache.num_samples,
            weights=len(self.weights),
            steps=len(self.acts),
            post_softmax=len(self.post),
            evals=evals,
            time_s=time.perf_counter() - t0,
        )

    def _optimise(self, cache, groups, gen, eval_idx, before_eval, progress):
        s = self.settings
        opt = torch.optim.Adam(groups)
        base_lrs = [g['lr'] for g in opt.param_groups]
        is_step = [g['kind'] == 'step' for g in opt.param_groups]
        n_weights = sum(p.numel() for _, ada in self.weights for p in ada.parameters())
        regularise = s.weight_mode == 'adaround' and s.reg_weight > 0
        # AdaRound's hardened state improves only as the regulariser anneals, and the anneal
        # runs to the last iteration (reference ViT, 1000 iterations: the patch embedding's
        # hardened loss sat at its start for 450 iterations, then fell by 70 %); stopping
        # early would cut the anneal short. Early stopping is for the other modes.
        warm = int(s.warmup * s.iters)
        every, patience = s.eval_interval(), s.patience
        may_stop = patience > 0 and not (self.weights and regularise)
        best, best_loss, best_it, stale, evals = None, before_eval, 0, 0, []
        it = 0
        loss_v = float('nan')
        with torch.enable_grad():
            for it in range(1, s.iters + 1):
                # cosine decay of the step learning rate (AdaRound's V keeps its rate)
                for g, lr0, step_group in zip(opt.param_groups, base_lrs, is_step):
                    if step_group:
                        g['lr'] = lr0 * 0.5 * (1 + math.cos(math.pi * (it - 1) / s.iters))
                self.hard = False
                self._set_drop(True)
                args, kwargs, target = cache.sample(s.batch_size, gen)
                out = self.module(*args, **kwargs)
                n = sum(t.numel() for t in _float_leaves(target))
                rec = squared_error(out, target) / n / self.norm
                loss = rec
                if self.weights and it > warm and regularise:
                    frac = (it - warm) / max(1, s.iters - warm)
                    beta = s.anneal[0] + (s.anneal[1] - s.anneal[0]) * frac
                    reg = sum(ada.regularizer(beta) * ada.v.numel() for _, ada in self.weights)
                    loss = loss + s.reg_weight * reg / n_weights
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                loss_v = float(rec.detach())
                if progress is not None:
                    progress.update(it, loss_v)
                if it % every == 0 or it == s.iters:
                    self.hard = True
                    self._set_drop(False)
                    cur = self._loss(cache, eval_idx)
                    evals.append((it, cur))
                    if cur < best_loss * (1 - s.min_delta):
                        best, best_loss, best_it, stale = self._snapshot(), cur, it, 0
                    else:
                        if cur < best_loss:  # better, not by enough to reset patience
                            best, best_loss, best_it = self._snapshot(), cur, it
                        stale += it > warm
                        if may_stop and stale >= patience:
                            break
        self.hard = False
        return best, best_loss, best_it, it, evals

    @torch.no_grad()
    def _write(self, state: dict) -> None:
        for (layer, ada), h in zip(self.weights, state['h']):
            key = id(layer)
            if key not in self.original_weights:
                self.original_weights[key] = (layer, layer.weight.detach().clone())
            layer.weight.copy_(ada.state_weight(h).to(layer.weight.dtype))
        for (_, _, lsq), step in zip(self.acts, state['steps']):
            lsq.original_scale = lsq.quantizer.scale.detach().clone()
            lsq.quantizer.scale.copy_(step.abs().clamp_min(1e-8).to(lsq.quantizer.scale))
        for (_, _, w), values in zip(self.post, state['post']):
            w.original = {k: getattr(w.quantizer, k).detach().clone() for k in values}
            for k, v in values.items():
                getattr(w.quantizer, k).copy_(v)

    @torch.no_grad()
    def _restore(self) -> None:
        for layer, w in self.original_weights.values():
            layer.weight.copy_(w)
        self.original_weights.clear()
        for _, _, lsq in self.acts:
            if hasattr(lsq, 'original_scale'):
                lsq.quantizer.scale.copy_(lsq.original_scale)
        for _, _, w in self.post:
            for k, v in getattr(w, 'original', {}).items():
                getattr(w.quantizer, k).copy_(v)
