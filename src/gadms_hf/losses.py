"""GA-DMS losses (docs/method.md §6): SDM, InfoNCE, ID and MIM, plus a gradient-keeping gather.

Shipped to the Hub with the model: imports only torch.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F


def _at_least_float32(tensor: torch.Tensor) -> torch.Tensor:
    """Losses in float32 under autocast/bf16, but never below the input's precision (float64 stays)."""
    return tensor.to(torch.promote_types(tensor.dtype, torch.float32))


def _world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


class _GatherWithGrad(torch.autograd.Function):
    """all_gather forward; backward sums every rank's gradient and keeps the local slice."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        gathered = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
        dist.all_gather(gathered, tensor.contiguous())
        return torch.cat(gathered)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)
        local = grad.shape[0] // dist.get_world_size()
        return grad[dist.get_rank() * local : (dist.get_rank() + 1) * local]


def gather_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate `tensor` from every rank along dim 0, keeping gradients to the local part.

    Every rank then computes the same global-batch loss; the gather's backward sums the
    ranks' gradients and DDP's average divides by the world size, which together give the
    exact gradient of the global loss. Ranks must hold equally sized batches (accelerate's
    `even_batches`, on by default).
    """
    if _world_size() == 1:
        return tensor
    return _GatherWithGrad.apply(tensor)


def global_identities(person_ids: torch.Tensor | None, batch_size: int, device: torch.device) -> torch.Tensor:
    """Identities of the global batch; without ids every sample is its own identity."""
    if person_ids is None:
        offset = dist.get_rank() * batch_size if _world_size() > 1 else 0
        person_ids = torch.arange(batch_size, device=device) + offset
    if _world_size() == 1:
        return person_ids
    gathered = [torch.empty_like(person_ids) for _ in range(_world_size())]
    dist.all_gather(gathered, person_ids.contiguous())
    return torch.cat(gathered)


def sdm_loss(
    image_embeds: torch.Tensor,
    text_embeds: torch.Tensor,
    person_ids: torch.Tensor,
    scale: float,
    epsilon: float = 1e-8,
) -> torch.Tensor:
    """Similarity distribution matching: KL(softmax(scale * cos) || identity-match distribution),
    image->text rows plus text->image rows, each averaged over rows."""
    image = F.normalize(_at_least_float32(image_embeds), dim=-1)
    text = F.normalize(_at_least_float32(text_embeds), dim=-1)
    matches = (person_ids.view(-1, 1) == person_ids.view(1, -1)).to(image.dtype)
    target = matches / matches.sum(dim=1, keepdim=True)
    log_target = torch.log(target + epsilon)
    i2t = scale * image @ text.t()
    loss = 0.0
    for logits in (i2t, i2t.t()):
        log_p = F.log_softmax(logits, dim=1)
        loss = loss + (log_p.exp() * (log_p - log_target)).sum(dim=1).mean()
    return loss


def infonce_loss(
    image_embeds: torch.Tensor,
    text_embeds: torch.Tensor,
    scale: float | torch.Tensor,
    person_ids: torch.Tensor | None = None,
) -> torch.Tensor:
    """CLIP's symmetric cross-entropy, image->text and text->image rows averaged.

    With `person_ids` the target of each row is its identity-match distribution (uniform over the
    batch items of the same person, as SDM's): two captions of one person are both positives, not
    each other's negatives. With one item per identity (or no ids) this is exactly CLIP's loss.
    Unlike SDM (KL(p || q)), the pull on a true pair (p - q) never vanishes while the towers still
    score everything alike, which is why randomly initialised towers learn with it and not with SDM.
    """
    image = F.normalize(_at_least_float32(image_embeds), dim=-1)
    text = F.normalize(_at_least_float32(text_embeds), dim=-1)
    logits = scale * image @ text.t()
    if person_ids is None:
        targets = torch.arange(logits.shape[0], device=logits.device)
        return (F.cross_entropy(logits, targets) + F.cross_entropy(logits.t(), targets)) / 2
    matches = (person_ids.view(-1, 1) == person_ids.view(1, -1)).to(logits.dtype)
    target = matches / matches.sum(dim=1, keepdim=True)
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target)) / 2


def id_loss(
    classifier: torch.nn.Module, image_embeds: torch.Tensor, text_embeds: torch.Tensor, person_ids: torch.Tensor
) -> torch.Tensor:
    """Identity classification of both modalities by one shared linear classifier, summed."""
    return F.cross_entropy(_at_least_float32(classifier(image_embeds)), person_ids) + F.cross_entropy(
        _at_least_float32(classifier(text_embeds)), person_ids
    )


class _VocabularyCrossEntropy(torch.autograd.Function):
    """mean_i CE(hidden_i @ weight.T + bias, target_i), one vocabulary chunk at a time (docs/method.md §6's
    MIM head: the last linear layer and the cross-entropy, fused).

    The (rows x vocabulary) logits are never held whole: each chunk's logits feed a running
    logsumexp (float32) and are recomputed in the backward. On a CPU the full logits of a
    128-wide model's MIM batch (about 640 x 49,409 floats) cost more in memory traffic than in
    arithmetic; chunks small enough for the cache make the head about 1.2x faster in float32
    and about 2x in bfloat16 (`torch.autocast`), and the memory is one chunk instead of the
    whole matrix. The matrix products run in `dtype` (the autocast dtype under autocast).
    """

    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, dtype, chunk):
        x, acc = hidden.to(dtype), _accumulation_dtype(dtype)
        w, b = weight.to(dtype), None if bias is None else bias.to(dtype)  # cast once, not per chunk
        lse = torch.full((x.shape[0],), float("-inf"), dtype=acc, device=x.device)
        picked = torch.empty(x.shape[0], dtype=acc, device=x.device)
        for start in range(0, w.shape[0], chunk):
            logits = _chunk_logits(x, w, b, start, chunk, acc)
            lse = torch.logaddexp(lse, torch.logsumexp(logits, dim=1))
            rows = _rows_in_chunk(targets, start, logits.shape[1])
            picked[rows] = logits[rows, targets[rows] - start]
        ctx.save_for_backward(x, w, b, targets, lse)
        ctx.dtypes = (hidden.dtype, weight.dtype, None if bias is None else bias.dtype)
        ctx.chunk = chunk
        return (lse - picked).mean()

    @staticmethod
    def backward(ctx, grad):
        x, w, b, targets, lse = ctx.saved_tensors
        hidden_dtype, weight_dtype, bias_dtype = ctx.dtypes
        acc = lse.dtype
        scale = grad.to(acc) / x.shape[0]
        need_hidden, need_weight, need_bias = ctx.needs_input_grad[:3]
        grad_hidden = torch.zeros(x.shape, dtype=acc, device=x.device) if need_hidden else None
        grad_weight = torch.empty(w.shape, dtype=weight_dtype, device=w.device) if need_weight else None
        grad_bias = torch.empty(b.shape, dtype=bias_dtype, device=b.device) if need_bias else None
        for start in range(0, w.shape[0], ctx.chunk):
            # d loss / d logits = (softmax - one-hot) / rows, chunk by chunk
            probs = _chunk_logits(x, w, b, start, ctx.chunk, acc).sub_(lse[:, None]).exp_()
            rows = _rows_in_chunk(targets, start, probs.shape[1])
            probs[rows, targets[rows] - start] -= 1.0
            probs = probs.mul_(scale)
            stop = start + probs.shape[1]
            if need_bias:
                grad_bias[start:stop] = probs.sum(dim=0)
            probs = probs.to(x.dtype)
            if need_hidden:
                grad_hidden += (probs @ w[start:stop]).to(acc)
            if need_weight:
                grad_weight[start:stop] = probs.t() @ x
        grad_hidden = grad_hidden.to(hidden_dtype) if need_hidden else None
        return grad_hidden, grad_weight, grad_bias, None, None, None


def _accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.promote_types(dtype, torch.float32)  # float32, or float64 for float64 inputs


def _chunk_logits(x, w, b, start, chunk, acc) -> torch.Tensor:
    """Logits of vocabulary rows [start, start + chunk), computed in x's dtype, returned in `acc`."""
    weight = w[start : start + chunk]
    logits = x @ weight.t() if b is None else torch.addmm(b[start : start + chunk], x, weight.t())
    return logits.to(acc)


def _rows_in_chunk(targets: torch.Tensor, start: int, size: int) -> torch.Tensor:
    return ((targets >= start) & (targets < start + size)).nonzero().squeeze(1)


def mim_loss(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    targets: torch.Tensor,
    chunk_size: int = 4096,
) -> torch.Tensor:
    """MIM cross-entropy of the labelled rows: `F.cross_entropy(F.linear(hidden, weight, bias), targets)`
    computed without materialising the (rows x vocabulary) logits.

    Zero (with a graph) when no row is labelled. Under `torch.autocast` the products run in the
    autocast dtype, as `F.linear` would; the logsumexp is accumulated in float32 either way.
    """
    if targets.numel() == 0:
        return (hidden.sum() + weight.sum()) * 0.0
    device = hidden.device.type
    autocast = torch.is_autocast_enabled(device)
    dtype = torch.get_autocast_dtype(device) if autocast else torch.promote_types(hidden.dtype, weight.dtype)
    with torch.autocast(device, enabled=False):
        return _VocabularyCrossEntropy.apply(hidden, weight, bias, targets, dtype, chunk_size)


__all__ = [
    "sdm_loss",
    "infonce_loss",
    "id_loss",
    "mim_loss",
    "gather_with_grad",
    "global_identities",
]
