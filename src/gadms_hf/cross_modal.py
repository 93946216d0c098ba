"""The cross-modal block and masked-informative-token (MIM) head of docs/method.md §6.

Text states (queries) attend to all image tokens, a small transformer mixes the result, and
a prediction head recovers the original ids *only at the labelled positions*: full logits
would be batch x 77 x 49,409 floats, most of them thrown away. In training the head's last
layer is fused with the cross-entropy (`losses.mim_loss`), so not even the labelled positions'
logits are held whole.

Layer names follow the OpenAI/IRRA layout (packed `in_proj`, `ln_1`, `mlp.c_fc`, ...) so
that the authors' checkpoints map onto this module one to one. Shipped to the Hub with
the model: imports only torch (and, relatively, `losses`).
"""

from __future__ import annotations

import torch
from torch import nn

from .losses import mim_loss


class GADMSQuickGELU(nn.Module):
    """x * sigmoid(1.702 x), CLIP's activation."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


class GADMSResidualBlock(nn.Module):
    """Pre-norm self-attention + MLP block (no mask: every text position sees every other)."""

    def __init__(self, width: int, heads: int, eps: float):
        super().__init__()
        self.ln_1 = nn.LayerNorm(width, eps=eps)
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.ln_2 = nn.LayerNorm(width, eps=eps)
        self.mlp = nn.Sequential()
        self.mlp.add_module("c_fc", nn.Linear(width, 4 * width))
        self.mlp.add_module("gelu", GADMSQuickGELU())
        self.mlp.add_module("c_proj", nn.Linear(4 * width, width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.ln_1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        return x + self.mlp(self.ln_2(x))

    def forward_at(self, x: torch.Tensor, index: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        """The block's output (M, D) at the `present` entries of the (B, K) positions `index` only, row-major;
        every position is still a key and value. Equal to `forward(x)` there (the MLP is position-wise)."""
        h = self.ln_1(x)
        rows = torch.arange(x.shape[0], device=x.device).unsqueeze(1)
        x = x[rows, index] + self.attn(h[rows, index], h, h, need_weights=False)[0]
        x = x[present]
        return x + self.mlp(self.ln_2(x))


class GADMSTokenHead(nn.Module):
    """dense -> QuickGELU -> LayerNorm -> vocabulary logits."""

    def __init__(self, width: int, vocab_size: int, eps: float):
        super().__init__()
        self.dense = nn.Linear(width, width)
        self.gelu = GADMSQuickGELU()
        self.ln = nn.LayerNorm(width, eps=eps)
        self.fc = nn.Linear(width, vocab_size)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The states the vocabulary layer `fc` reads (the MIM loss fuses `fc` with its cross-entropy)."""
        return self.ln(self.gelu(self.dense(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))


class GADMSCrossModalHead(nn.Module):
    """Cross-attention from projected text states to projected image tokens, `depth` blocks,
    a final layer norm, and the token head applied at labelled positions only."""

    def __init__(self, width: int, depth: int, vocab_size: int, eps: float = 1e-5):
        super().__init__()
        heads = width // 64
        self.width, self.depth = width, depth
        self.ln_pre_t = nn.LayerNorm(width, eps=eps)
        self.ln_pre_i = nn.LayerNorm(width, eps=eps)
        self.cross_attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.blocks = nn.ModuleList([GADMSResidualBlock(width, heads, eps) for _ in range(depth)])
        self.ln_post = nn.LayerNorm(width, eps=eps)
        self.mlm_head = GADMSTokenHead(width, vocab_size, eps)
        self._assign_init_stds()

    def _fuse(self, text_states: torch.Tensor, image_states: torch.Tensor, blocks) -> torch.Tensor:
        """Cross-attention to the image tokens, then `blocks`, at every text position (no final norm)."""
        image = self.ln_pre_i(image_states)
        x = self.cross_attn(self.ln_pre_t(text_states), image, image, need_weights=False)[0]
        for block in blocks:
            x = block(x)
        return x

    def encode(self, text_states: torch.Tensor, image_states: torch.Tensor) -> torch.Tensor:
        """(B, T, D) text, (B, N, D) image -> (B, T, D) fused text states."""
        return self.ln_post(self._fuse(text_states, image_states, self.blocks))

    def labelled_states(
        self, text_states: torch.Tensor, image_states: torch.Tensor, labels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Fused states (M, D) and targets (M,) at the M labelled positions (labels != -100), row-major.

        Only the labelled positions' states are read, so the last block computes its queries, output
        projection and MLP (and the final norm) at those positions alone: the same numbers as `encode`.
        """
        selected = labels != -100
        counts = selected.sum(dim=1)
        width = int(counts.max()) if counts.numel() else 0
        if not self.blocks or width == 0:  # nothing to save (and keep the graph when nothing is labelled)
            return self.encode(text_states, image_states)[selected], labels[selected]
        x = self._fuse(text_states, image_states, self.blocks[:-1])
        # each row's labelled positions first, ascending (a stable sort), padded to the row maximum
        index = torch.sort((~selected).to(torch.uint8), dim=1, stable=True).indices[:, :width]
        present = torch.arange(width, device=labels.device).unsqueeze(0) < counts.unsqueeze(1)
        return self.ln_post(self.blocks[-1].forward_at(x, index, present)), labels[selected]

    def forward(
        self, text_states: torch.Tensor, image_states: torch.Tensor, labels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits (M, vocab) and targets (M,) for the M labelled positions (labels != -100)."""
        states, targets = self.labelled_states(text_states, image_states, labels)
        return self.mlm_head(states), targets

    def loss(self, text_states: torch.Tensor, image_states: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The MIM cross-entropy at the labelled positions; the vocabulary logits are never held whole."""
        states, targets = self.labelled_states(text_states, image_states, labels)
        head = self.mlm_head
        return mim_loss(head.features(states), head.fc.weight, head.fc.bias, targets)

    def _assign_init_stds(self) -> None:
        """IRRA's scheme, recorded on each leaf for the model's `_init_weights`: std width^-0.5
        for attention inputs, scaled down by depth for residual outputs."""
        attn_std = self.width**-0.5
        proj_std = attn_std * (2 * max(self.depth, 1)) ** -0.5
        fc_std = (2 * self.width) ** -0.5
        for attn in [self.cross_attn] + [block.attn for block in self.blocks]:
            attn.init_std = attn_std
            attn.out_proj.init_std = proj_std
        for block in self.blocks:
            block.mlp.c_fc.init_std = fc_std
            block.mlp.c_proj.init_std = proj_std
        self.mlm_head.dense.init_std = fc_std
        self.mlm_head.fc.init_std = proj_std


__all__ = ["GADMSCrossModalHead", "GADMSResidualBlock", "GADMSTokenHead", "GADMSQuickGELU"]
