"""GASS: the gradient-attention similarity score of every caption token (docs/method.md §3).

A token is informative when the caption's match with its own image depends on it. For each
of the last L text layers, GASS multiplies
  - the gradient of the image-text cosine w.r.t. the attention output at the end-of-text
    position (which value directions raise the match),
  - each token's value vector (what the token contributes in those directions),
  - a multi-scale pooled query-key cosine (end-of-text query vs each key), min-max scaled,
  - the end-of-text query's attention to the token, renormalised over word tokens,
sums over layers, applies ReLU and min-max scales to [0, 1].

Activations are captured by hooks on the real attention modules (so LoRA-wrapped
projections are seen as they are) during one forward without a graph. The gradient is
needed at the end-of-text position only, and under the causal mask that position's
activations reach the caption embedding through the same position of the layers above
alone, so the scored layers are re-run (through the same modules) at that position, and
`torch.autograd.grad` is taken towards its activations only: no backward through every
token, no parameter `.grad` touched, and the training loss is unaffected. Shipped to the
Hub with the model: imports only torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from .configuration_gadms import GASS_NORMALIZATIONS


def multiscale_pool(x: torch.Tensor, windows: Sequence[int]) -> torch.Tensor:
    """Average-pool (B, T, D) along T with each window (stride = window, the last partial
    window averaged on its own), linearly interpolate back to T, and average the scales."""
    length = x.shape[1]
    scales = []
    for window in windows:
        if window == 1:
            scales.append(x)
            continue
        pad = (-length) % window
        padded = F.pad(x, (0, 0, 0, pad))
        sums = padded.reshape(x.shape[0], -1, window, x.shape[2]).sum(dim=2)
        counts = torch.full((sums.shape[1],), float(window), dtype=x.dtype, device=x.device)
        counts[-1] = window - pad
        pooled = sums / counts.view(1, -1, 1)
        scales.append(_lerp_to_length(pooled, length))
    return torch.stack(scales).mean(dim=0)


def _lerp_to_length(x: torch.Tensor, length: int) -> torch.Tensor:
    """Linear interpolation of (B, T', D) along T' to `length` (align_corners=False semantics).

    A gather + lerp: `F.interpolate` over the token axis of a (B, D, T') view is correct but
    its CUDA kernel parallelises only over output positions (43% of a GA-DMS step on an H100).
    """
    source = x.shape[1]
    positions = ((torch.arange(length, device=x.device, dtype=x.dtype) + 0.5) * (source / length) - 0.5).clamp(min=0)
    low = positions.floor().long().clamp(max=source - 1)
    high = (low + 1).clamp(max=source - 1)
    weight = (positions - low.to(x.dtype)).view(1, -1, 1)
    return x[:, low] * (1 - weight) + x[:, high] * weight


def minmax(x: torch.Tensor, dim: int | tuple[int, ...] | None) -> torch.Tensor:
    """Min-max scale to [0, 1] over `dim` (None = whole tensor); a flat slice becomes zeros."""
    if dim is None:
        low, high = x.min(), x.max()
    else:
        low, high = x.amin(dim=dim, keepdim=True), x.amax(dim=dim, keepdim=True)
    span = high - low
    return torch.where(span > 0, (x - low) / torch.where(span > 0, span, torch.ones_like(span)), torch.zeros_like(x))


class _Capture:
    """Forward hooks on one attention module: q/k/v projections and the out_proj input."""

    def __init__(self, attention: nn.Module):
        self.q = self.k = self.v = self.a = None
        self.handles = [
            attention.q_proj.register_forward_hook(self._keep("q")),
            attention.k_proj.register_forward_hook(self._keep("k")),
            attention.v_proj.register_forward_hook(self._keep("v")),
            attention.out_proj.register_forward_pre_hook(self._keep_input),
        ]

    def _keep(self, name: str):
        def hook(module, args, output):
            setattr(self, name, output)

        return hook

    def _keep_input(self, module, args):
        self.a = args[0]

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


def _attend_one(
    query: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, allowed: torch.Tensor, num_heads: int, scale: float
) -> torch.Tensor:
    """Multi-head attention output (B, D), before the output projection, of one query per row (B, D)
    over (B, T, D) keys and values, where `allowed` (B, T) is true; softmax in at least float32."""
    batch, length, width = keys.shape
    head_dim = width // num_heads
    heads = query.view(batch, num_heads, 1, head_dim)
    keys = keys.view(batch, length, num_heads, head_dim).transpose(1, 2)
    values = values.view(batch, length, num_heads, head_dim).transpose(1, 2)
    logits = (heads @ keys.transpose(-1, -2)) * scale
    logits = logits.masked_fill(~allowed.view(batch, 1, 1, length), float("-inf"))
    weights = logits.softmax(dim=-1, dtype=torch.promote_types(logits.dtype, torch.float32)).to(values.dtype)
    return (weights @ values).reshape(batch, width)


@contextmanager
def scoring_mode(text_model: nn.Module):
    """Eval mode for the scoring pass: no dropout, and no gradient checkpointing (its
    re-entrant variant runs the forward without a graph, which leaves nothing to differentiate)."""
    was_training = text_model.training
    text_model.train(False)
    try:
        yield
    finally:
        text_model.train(was_training)


class GASSScorer:
    """Computes GASS token scores for a CLIP text tower (`transformers.CLIPTextModel`)."""

    def __init__(self, num_layers: int = 8, normalization: str = "batch", pool_windows: Sequence[int] = (1, 2)):
        if normalization not in GASS_NORMALIZATIONS:
            raise ValueError(f"normalization={normalization!r} must be one of {GASS_NORMALIZATIONS}")
        self.num_layers = num_layers
        self.normalization = normalization
        self.pool_windows = tuple(pool_windows)

    def __call__(
        self,
        text_model: nn.Module,
        text_projection: nn.Module,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None,
        image_embeds: torch.Tensor,
        eos_positions: torch.Tensor,
    ) -> torch.Tensor:
        """Scores (B, T) in [0, 1] for clean `input_ids`; zero outside word tokens."""
        layers = text_model.encoder.layers[-self.num_layers :]
        captures = [_Capture(layer.self_attn) for layer in layers]
        rows = torch.arange(input_ids.shape[0], device=input_ids.device)
        entering: list[torch.Tensor] = []
        first = layers[0].register_forward_pre_hook(
            lambda module, args, kwargs: entering.append(args[0] if args else kwargs["hidden_states"]),
            with_kwargs=True,
        )
        # 1. One forward without a graph: q, k, v of every position and the residual stream entering the
        # first scored layer.
        try:
            with torch.no_grad(), scoring_mode(text_model):
                hidden = text_model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        finally:
            first.remove()
            for capture in captures:
                capture.remove()
        # 2. dS/dA_l at end-of-text. Causal attention: the caption embedding is the end-of-text state,
        # which no later position feeds, and A_l[e] reaches it only through position e of the layers
        # above (its q, and its own k and v among the keys). So the scored layers are re-run at that one
        # position, through the real modules, from a fresh leaf, with every other position's k and v
        # held at their forward values: exactly the derivative of the full forward, without a backward
        # through batch x length activations.
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        allowed = positions.unsqueeze(0) <= eos_positions.unsqueeze(1)
        if attention_mask is not None:
            allowed = allowed & attention_mask.bool()
        with torch.enable_grad(), scoring_mode(text_model):
            state = entering[0][rows, eos_positions].detach().requires_grad_(True)
            attended = []
            for layer, capture in zip(layers, captures):
                attention = layer.self_attn
                normed = layer.layer_norm1(state)
                keys = capture.k.detach().index_put((rows, eos_positions), attention.k_proj(normed))
                values = capture.v.detach().index_put((rows, eos_positions), attention.v_proj(normed))
                attended.append(
                    _attend_one(attention.q_proj(normed), keys, values, allowed, attention.num_heads, attention.scale)
                )
                state = state + attention.out_proj(attended[-1])
                state = state + layer.mlp(layer.layer_norm2(state))
            text_embeds = text_projection(text_model.final_layer_norm(state))
            precision = torch.promote_types(text_embeds.dtype, torch.float32)
            similarity = F.cosine_similarity(text_embeds.to(precision), image_embeds.detach().to(precision), dim=-1)
            grads = torch.autograd.grad(similarity.sum(), attended)

        dtype = torch.promote_types(hidden.dtype, torch.float32)
        valid = self.valid_tokens(input_ids, eos_positions)
        total = torch.zeros(input_ids.shape, dtype=dtype, device=input_ids.device)
        for capture, grad, layer in zip(captures, grads, layers):
            total = total + self.layer_importance(
                capture.q.detach().to(dtype),
                capture.k.detach().to(dtype),
                capture.v.detach().to(dtype),
                grad.to(dtype),
                layer.self_attn.num_heads,
                eos_positions,
                valid,
            )
        scores = torch.relu(total) * valid
        dim = None if self.normalization == "batch" else 1
        return minmax(scores, dim) * valid

    @staticmethod
    def valid_tokens(input_ids: torch.Tensor, eos_positions: torch.Tensor) -> torch.Tensor:
        """Word tokens: after the start token, before the end-of-text token."""
        positions = torch.arange(input_ids.shape[1], device=input_ids.device).unsqueeze(0)
        return ((positions >= 1) & (positions < eos_positions.unsqueeze(1))).to(torch.float32)

    def layer_importance(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        grad_eos: torch.Tensor,
        num_heads: int,
        eos_positions: torch.Tensor,
        valid: torch.Tensor,
    ) -> torch.Tensor:
        """m_l (B, T) of one layer from its q/k/v (B, T, D) and dS/dA at end-of-text (B, D)."""
        batch, length, width = q.shape
        rows = torch.arange(batch, device=q.device)
        valid = valid.to(q.dtype)

        q_pool, k_pool = multiscale_pool(q, self.pool_windows), multiscale_pool(k, self.pool_windows)
        qk_cos = F.cosine_similarity(q_pool[rows, eos_positions].unsqueeze(1), k_pool, dim=-1)
        qk_cos = minmax(qk_cos, dim=1)

        raw = (v @ grad_eos.unsqueeze(-1)).squeeze(-1) * qk_cos

        head_dim = width // num_heads
        q_eos = q[rows, eos_positions].view(batch, num_heads, 1, head_dim)
        keys = k.view(batch, length, num_heads, head_dim).transpose(1, 2)
        logits = (q_eos @ keys.transpose(-1, -2)).squeeze(2) * head_dim**-0.5
        causal = torch.arange(length, device=q.device).view(1, 1, -1) <= eos_positions.view(-1, 1, 1)
        attention = logits.masked_fill(~causal, float("-inf")).softmax(dim=-1).mean(dim=1) * valid
        norm = attention.sum(dim=1, keepdim=True)
        attention = attention / torch.where(norm > 0, norm, torch.ones_like(norm))
        return raw * attention


__all__ = ["GASSScorer", "multiscale_pool", "minmax"]
