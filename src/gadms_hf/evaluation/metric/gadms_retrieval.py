"""Person-retrieval metrics (Rank-k, mAP, mINP) as an `evaluate` module.

`evaluate.load` copies this script into its module cache and checks its imports line by line:
imports of *installed* packages are allowed, so the numbers come from the one implementation,
`gadms_hf.evaluation.ranking.rank_metrics` (gadms-hf must be installed where this is loaded).
"""

import datasets
import evaluate
import numpy as np

from gadms_hf.evaluation.ranking import rank_metrics

_DESCRIPTION = """\
Text-based person retrieval metrics (docs/method.md §7). Every query ranks the whole gallery by
cosine similarity, ties broken by gallery index. Rank-k is the percentage of queries with an item of
their identity among the first k; AP averages j / r_j over the places r_1 < r_2 < ... of the correct
items; INP is (number of correct items) / (place of the last one). All results are percentages.
"""

_KWARGS_DESCRIPTION = """
Two configurations:

- "embeddings" (the default): one query embedding per prediction.
- "similarity": one row of query-vs-gallery scores per prediction.

Args:
    predictions: query embeddings, (n_query, dim) ("embeddings"), or similarity rows,
        (n_query, n_gallery) ("similarity").
    references: identity of each query (integers or strings).
    gallery_ids: identity of each gallery item.
    gallery_embeddings: (n_gallery, dim) gallery embeddings ("embeddings" only).
    ks: the k of each Rank-k (default (1, 5, 10)).
    chunk_size: queries scored at once (default 1024).
    skip_unmatched: leave out queries whose identity is not in the gallery instead of raising.
Returns:
    R1, R5, R10 (one per k), mAP, mINP: percentages.
Examples:
    >>> metric = evaluate.load("path/to/gadms_retrieval.py")
    >>> metric.compute(predictions=[[1.0, 0.0], [0.0, 1.0]], references=[0, 1],
    ...                gallery_embeddings=[[0.9, 0.1], [0.2, 0.8]], gallery_ids=[0, 1])
    {'R1': 100.0, 'R5': 100.0, 'R10': 100.0, 'mAP': 100.0, 'mINP': 100.0}
"""

_CITATION = """\
@inproceedings{gadms2025,
  title = {Gradient-Attention Guided Dual-Masking Synergetic Framework for Robust Text-based Person Retrieval},
  booktitle = {Proceedings of EMNLP},
  year = {2025},
  note = {arXiv:2509.09118}
}
"""

_CONFIGS = ("default", "embeddings", "similarity")


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class GadmsRetrieval(evaluate.Metric):
    """Rank-k / mAP / mINP of queries ranking a gallery; see the module description."""

    def _info(self) -> evaluate.MetricInfo:
        if self.config_name not in _CONFIGS:
            raise ValueError(f"unknown configuration {self.config_name!r}; use 'embeddings' or 'similarity'")
        vector = datasets.Sequence(datasets.Value("float32"))
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=[
                datasets.Features({"predictions": vector, "references": datasets.Value("int64")}),
                datasets.Features({"predictions": vector, "references": datasets.Value("string")}),
            ],
            reference_urls=["https://arxiv.org/abs/2509.09118"],
        )

    def _compute(
        self,
        predictions,
        references,
        gallery_ids=None,
        gallery_embeddings=None,
        ks=(1, 5, 10),
        chunk_size=1024,
        skip_unmatched=False,
    ):
        if gallery_ids is None:
            raise ValueError("gallery_ids is required: the identity of every gallery item")
        rows = np.asarray(predictions, dtype=np.float32)
        if self.config_name == "similarity":
            if gallery_embeddings is not None:
                raise ValueError("the 'similarity' configuration takes score rows; drop gallery_embeddings")
            query_embeds, gallery_embeds, similarity = None, None, rows
        else:
            if gallery_embeddings is None:
                raise ValueError(
                    "gallery_embeddings is required by the 'embeddings' configuration "
                    "(use evaluate.load(path, 'similarity') to pass score rows instead)"
                )
            query_embeds, gallery_embeds, similarity = rows, np.asarray(gallery_embeddings, np.float32), None
        return rank_metrics(
            query_embeds,
            gallery_embeds,
            np.asarray(references),
            np.asarray(gallery_ids),
            ks=tuple(int(k) for k in ks),
            chunk_size=chunk_size,
            similarity=similarity,
            skip_unmatched=skip_unmatched,
        )
