"""Render the model card (model_cards/gadms.md, bundled) with this run's facts and metrics."""

from __future__ import annotations

import os
from importlib import resources
from typing import TYPE_CHECKING

from ..configuration_gadms import GADMSConfig
from ..evaluation.benchmarks import format_metrics_table

if TYPE_CHECKING:
    from ..evaluation.callback import RetrievalEvalCallback


def _template() -> str:
    # src/gadms_hf/model_cards links to the repository's model_cards/ and ships in the wheel.
    return (resources.files("gadms_hf") / "model_cards" / "gadms.md").read_text(encoding="utf-8")


def describe_weights(step: int, last_step: int, eval_callback: RetrievalEvalCallback | None = None) -> str:
    """The card's answer to "which checkpoint is this?": the training step of the published weights and,
    when a `RetrievalEvalCallback` scored the run, their scores and the best ones on the callback's split."""
    if eval_callback is None or not eval_callback.history:
        where = "the end of training" if step == last_step else "selected after training"
        return f"These are the weights at step {step} of {last_step}, {where}; they were not evaluated during training."
    names = sorted({eval_callback.split_of(name) for name in eval_callback.benchmarks})
    split, metric = "`/`".join(names), eval_callback.metric_for_best
    where = "the end of training" if step == last_step else f"the best {metric} on the `{split}` split"
    lines = [f"These are the weights at step {step} of {last_step}, {where}. The run's checkpoints and "
             "best-so-far copies are not uploaded."]
    if step in eval_callback.history:
        lines.append(f"Their scores on the `{split}` split, measured at step {step}:\n\n"
                     + format_metrics_table(eval_callback.history[step]))
    best = "; ".join(f"{name} {eval_callback.best[name]:.2f} at step {best_step}"
                     for name, best_step in eval_callback.best_steps.items())
    lines.append(f"Best {metric} on the `{split}` split during training: {best}.")
    return "\n\n".join(lines)


def render_model_card(config: GADMSConfig, model_args, data_args, training_args, results: dict,
                      stage: str = "pretraining", repo_or_path: str | None = None, weights: str = "") -> str:
    height, width = config.image_size
    facts = dict(
        model_name=os.path.basename(os.path.normpath(training_args.output_dir)),
        repo_or_path=repo_or_path or training_args.hub_model_id or training_args.output_dir,
        dataset_name=data_args.dataset_name if data_args is not None else "unknown",
        stage=stage,
        recipe=getattr(model_args, "recipe", "gadms"),
        use_gass=config.use_gass,
        masking=config.masking,
        contrastive_loss=config.contrastive_loss,
        text_layers=config.text_config.num_hidden_layers,
        text_width=config.text_config.hidden_size,
        vision_layers=config.vision_config.num_hidden_layers,
        vision_width=config.vision_config.hidden_size,
        image_height=height,
        image_width=width,
        patch_size=config.vision_config.patch_size,
        projection_dim=config.projection_dim,
        optimizer=training_args.optimizer_name,
        learning_rate=training_args.learning_rate,
        weight_decay=training_args.weight_decay,
        batch_size=training_args.per_device_train_batch_size,
        world_size=training_args.world_size,
        steps=training_args.max_steps if training_args.max_steps > 0 else f"{training_args.num_train_epochs} epochs of",
        seed=training_args.seed,
        sdm_weight=config.sdm_loss_weight,
        mim_weight=config.mim_loss_weight,
        id_weight=config.id_loss_weight,
        results_table=format_metrics_table(results) if results else "Not evaluated in this run.",
        weights=weights or "The weights at the end of training.",
    )
    return _template().format(**facts)


def write_model_card(output_dir: str, config: GADMSConfig, model_args, data_args, training_args, results: dict,
                     train_metrics: dict | None = None, stage: str = "pretraining", weights: str = "") -> str:
    """Write README.md into `output_dir` (it is uploaded with the weights by push_to_hub).

    `weights`: which checkpoint the card describes (`describe_weights`).
    """
    card = render_model_card(config, model_args, data_args, training_args, results, stage, weights=weights)
    path = os.path.join(output_dir, "README.md")
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(card)
    return path


__all__ = ["describe_weights", "render_model_card", "write_model_card"]
