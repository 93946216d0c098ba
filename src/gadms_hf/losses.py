"""GA-DMS losses (SPEC section 6): SDM, InfoNCE, ID and MIM, plus a gradient-keeping gather.

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


def mim_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy over the labelled positions only; zero (with graph) when none is labelled."""
    if targets.numel() == 0:
        return logits.sum() * 0.0
    return F.cross_entropy(_at_least_float32(logits), targets)


__all__ = ["sdm_loss", "infonce_loss", "id_loss", "mim_loss", "gather_with_grad", "global_identities"]
