"""GADMSTrainer: the transformers Trainer plus loss-component logging and the score bank.

Score-bank consistency model. After every training micro-batch, the GASS rows of the batch's
captions are gathered from all ranks and written by each node's local main process into the
node's memory-mapped bank file, which every rank and data-loader worker of that node maps
(shared pages, no copies). A batch collated by a prefetching worker may therefore read rows
that are up to `num_workers * prefetch_factor` batches old; since a caption's row is only
read again in a later epoch, this staleness never reaches the masks. Checkpoints copy the
bank before the trainer state is written, and `train(resume_from_checkpoint=...)` restores
it before the first batch. Checkpoints appear complete or not at all (`checkpoints.py`).
"""

from __future__ import annotations

import logging
import math
import os
import shutil
from collections import defaultdict

import torch
from torch import nn
from transformers import Trainer, TrainerCallback
from transformers.trainer import TRAINER_STATE_NAME
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, rotate_checkpoints

from ..data.score_bank import TokenScoreBank
from ..data.transforms import ImageColumnTransform
from .arguments import GADMSTrainingArguments
from .checkpoints import (
    last_complete_checkpoint,
    publish_checkpoint,
    remove_partial_checkpoints,
    staging_root,
)

logger = logging.getLogger("gadms_hf")

LOSS_COMPONENTS = ("sdm_loss", "infonce_loss", "mim_loss", "id_loss")
NEW_MODULES = ("cross_modal.", "classifier.")


def warmup_cosine(step: int, warmup_steps: int, total_steps: int, start_factor: float) -> float:
    """Linear warm-up from `start_factor` to 1, then cosine decay to 0 (docs/method.md §9)."""
    if step < warmup_steps:
        return start_factor + (1.0 - start_factor) * step / max(1, warmup_steps)
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


class EpochBroadcast(TrainerCallback):
    """Tells epoch-keyed randomness (collator masks, seeded augmentation) which epoch starts.

    `on_epoch_begin` runs before the epoch's data-loader workers are created, so the workers
    receive the new epoch with their copy of the collator and transform.
    """

    def __init__(self, listeners: list):
        self.listeners = listeners

    def on_epoch_begin(self, args, state, control, **kwargs):
        epoch = math.floor((state.epoch or 0.0) + 1e-6)
        for listener in self.listeners:
            listener.set_epoch(epoch)


class GADMSTrainer(Trainer):
    """Trains a `GADMSModel`; logs sdm/mim/id losses and keeps the GASS score bank.

    `epoch_listeners`: objects with `set_epoch(int)` (e.g. the seeded `ImageColumnTransform`, whose
    count of skipped unreadable images is logged as `unreadable_images`); the data collator is added
    when it has `set_epoch`.
    """

    args: GADMSTrainingArguments

    def __init__(self, *args, score_bank: TokenScoreBank | None = None, epoch_listeners: list | None = None, **kwargs):
        self._staging_root: str | None = None  # set while a checkpoint is being written
        self._push_pending = False
        super().__init__(*args, **kwargs)
        self.score_bank = score_bank
        listeners = list(epoch_listeners or [])
        # their `unreadable` counters are logged (see data/transforms.py)
        self._image_transforms = [listener for listener in listeners if isinstance(listener, ImageColumnTransform)]
        if hasattr(self.data_collator, "set_epoch"):
            listeners.append(self.data_collator)
        if listeners:
            self.add_callback(EpochBroadcast(listeners))
        self._components: dict[str, dict[str, list[torch.Tensor]]] = {"train": defaultdict(list),
                                                                         "eval": defaultdict(list)}

    # ----------------------------------------------------------------- loss

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        caption_ids = inputs.pop("caption_ids", None)
        outputs = model(**inputs)
        mode = "train" if model.training else "eval"
        for name in LOSS_COMPONENTS:
            value = getattr(outputs, name, None)
            if value is not None:
                self._components[mode][name].append(value.detach())
        if model.training and outputs.gass_scores is not None and self.score_bank is not None:
            if caption_ids is None:
                raise ValueError("the batch has no caption_ids: the score bank cannot be updated")
            self._write_bank(caption_ids, outputs.gass_scores.detach())
        return (outputs.loss, outputs) if return_outputs else outputs.loss

    def _write_bank(self, caption_ids: torch.Tensor, scores: torch.Tensor) -> None:
        # Batches are padded to their longest caption: positions past it score 0, as GASS scores padding.
        # Full rows also give every rank the same shape for the gather.
        scores = nn.functional.pad(scores, (0, self.score_bank.text_length - scores.shape[1]))
        caption_ids = self.accelerator.gather(caption_ids.to(scores.device))
        scores = self.accelerator.gather(scores.float().contiguous())
        if self.args.local_process_index == 0:
            self.score_bank.write(caption_ids.cpu(), scores.cpu())

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Add the mean of each loss component since the last log (averaged over ranks)."""
        mode = "eval" if any(key.startswith("eval_") for key in logs) else "train"
        prefix = "eval_" if mode == "eval" else ""
        for name, values in self._components[mode].items():
            if values:
                mean = torch.stack(values).mean()
                mean = self.accelerator.reduce(mean.to(self.accelerator.device), reduction="mean")
                logs[f"{prefix}{name}"] = round(mean.item(), 4)
        self._components[mode].clear()
        if mode == "train" and self._image_transforms:
            skipped = torch.tensor(sum(t.unreadable.total for t in self._image_transforms), dtype=torch.float32)
            skipped = int(self.accelerator.reduce(skipped.to(self.accelerator.device), reduction="sum").item())
            if skipped:
                logs["unreadable_images"] = skipped  # since this process started, all ranks together
        super().log(logs, start_time)

    # ----------------------------------------------------------------- optimiser

    def create_optimizer(self, model=None) -> torch.optim.Optimizer:
        """Adam(W) with per-group learning rates: new heads x `new_module_lr_factor`, biases x
        `bias_lr_factor` with `bias_weight_decay`."""
        if self.optimizer is not None:
            return self.optimizer
        args = self.args
        model = self.model if model is None else model
        bias_decay = args.weight_decay if args.bias_weight_decay is None else args.bias_weight_decay
        groups: dict[tuple[float, float], list[nn.Parameter]] = defaultdict(list)
        for name, param in model.named_parameters():
            if not param.requires_grad:
                continue
            lr, decay = args.learning_rate, args.weight_decay
            if name.startswith(NEW_MODULES) or f".{NEW_MODULES[0]}" in name or f".{NEW_MODULES[1]}" in name:
                lr *= args.new_module_lr_factor
            if name.endswith("bias"):
                lr, decay = lr * args.bias_lr_factor, bias_decay
            if name.endswith("logit_scale"):
                decay = 0.0  # decay would pull the learned scale towards 1, as CLIP's training avoids
            groups[(lr, decay)].append(param)
        param_groups = [{"params": params, "lr": lr, "weight_decay": decay} for (lr, decay), params in groups.items()]
        optimizer_cls = torch.optim.Adam if args.optimizer_name == "adam" else torch.optim.AdamW
        self.optimizer = optimizer_cls(
            param_groups, lr=args.learning_rate, betas=(args.adam_beta1, args.adam_beta2), eps=args.adam_epsilon
        )
        return self.optimizer

    def create_scheduler(self, num_training_steps: int, optimizer: torch.optim.Optimizer | None = None):
        if self.args.lr_schedule == "hf" or self.lr_scheduler is not None:
            return super().create_scheduler(num_training_steps, optimizer)
        optimizer = optimizer or self.optimizer
        warmup = self.args.get_warmup_steps(num_training_steps)
        start = self.args.warmup_start_factor
        self.lr_scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: warmup_cosine(step, warmup, num_training_steps, start)
        )
        return self.lr_scheduler

    def create_model_card(self, *args, **kwargs) -> None:
        """Keep the GA-DMS card (`write_model_card`) when one is there; else transformers' generic one."""
        if os.path.isfile(os.path.join(self.args.output_dir, "README.md")):
            return
        super().create_model_card(*args, **kwargs)

    # ----------------------------------------------------------------- checkpoints

    def _get_output_dir(self, trial) -> str:
        # While a checkpoint is being written, the Trainer's save writes under the staging root.
        return self._staging_root or super()._get_output_dir(trial)

    def _save_checkpoint(self, model, trial) -> None:
        """Write the whole checkpoint (bank first) under `_tmp-checkpoint-N`, then rename it into place.

        Rotation (`save_total_limit`) and the Hub push from the checkpoint run once it has its final name.
        """
        run_dir = self._get_output_dir(trial)
        name = f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
        root = staging_root(run_dir, self.state.global_step)
        staged, final = os.path.join(root, name), os.path.join(run_dir, name)
        if self.args.should_save and os.path.exists(root):
            shutil.rmtree(root)  # left by an interrupted attempt at this step
        self.accelerator.wait_for_everyone()
        if self.score_bank is not None and self.args.should_save:
            self.score_bank.save(staged)
        self._staging_root, self._push_pending = root, False
        try:
            super()._save_checkpoint(model, trial)
        finally:
            self._staging_root = None
        self.accelerator.wait_for_everyone()  # every rank's RNG state is in
        if self.args.should_save:
            if self.state.best_model_checkpoint == staged:
                self.state.best_model_checkpoint = final
                self.state.save_to_json(os.path.join(staged, TRAINER_STATE_NAME))
            publish_checkpoint(staged, final)
            rotate_checkpoints(run_dir, self.args.save_total_limit, self.state.best_model_checkpoint, use_mtime=True)
        if self._push_pending:
            super()._push_from_checkpoint(final)

    def _push_from_checkpoint(self, checkpoint_folder: str) -> None:
        # The push uploads in the background: it must read the folder under its final name.
        if self._staging_root is not None:
            self._push_pending = True
            return
        super()._push_from_checkpoint(checkpoint_folder)

    def _run_epoch(self, **kwargs) -> None:
        # A resumed run whose checkpoint already reached max_steps would otherwise train one more step
        # (the Trainer tests the step count only after a step).
        if self.state.global_step >= self.state.max_steps > 0:
            logger.warning("the checkpoint is at step %d of %d: nothing left to train", self.state.global_step,
                           self.state.max_steps)
            self.control.should_training_stop = True
            return
        super()._run_epoch(**kwargs)

    def train(self, resume_from_checkpoint: str | bool | None = None, **kwargs):
        """`resume_from_checkpoint=True` picks the last *complete* checkpoint; interrupted saves are removed."""
        if self.args.should_save:
            remove_partial_checkpoints(self.args.output_dir)
        if resume_from_checkpoint is True:
            resume_from_checkpoint = last_complete_checkpoint(self.args.output_dir)
            if resume_from_checkpoint is None:
                raise ValueError(f"no complete checkpoint in --output_dir {self.args.output_dir} to resume from")
        if resume_from_checkpoint and self.score_bank is not None:
            if self.args.local_process_index == 0:
                self.score_bank = TokenScoreBank.load(resume_from_checkpoint, self.score_bank.path)
            self.accelerator.wait_for_everyone()
            if self.args.local_process_index != 0:
                self.score_bank = TokenScoreBank.open(self.score_bank.path)
            collator = self.data_collator
            if getattr(collator, "score_bank", None) is not None:
                collator.score_bank = self.score_bank
        return super().train(resume_from_checkpoint=resume_from_checkpoint, **kwargs)

__all__ = ["GADMSTrainer", "EpochBroadcast", "warmup_cosine", "LOSS_COMPONENTS"]
