"""CUHK-PEDES: 40,206 images of 13,003 identities, two captions per image (Li et al., CVPR 2017)."""

from ._common import PedesBenchmarkBuilder, require_field

# The published identity ranges of the splits: the released `caption_all.json` has no `split` field.
ID_RANGES = {"train": (1, 11_003), "val": (11_004, 12_003), "test": (12_004, 13_003)}


class CuhkPedes(PedesBenchmarkBuilder):
    """``reid_raw.json`` (list of {split, captions, file_path, id, processed_tokens}) plus ``imgs/``.

    The dataset as its authors send it names the list ``caption_all.json`` and leaves out ``split``; the
    split then follows from the identity, by the published ranges (train 1-11003, val 11004-12003, test
    12004-13003).
    """

    ANNOTATION_FILE = "reid_raw.json"
    ANNOTATION_VARIANTS = ("caption_all.json",)
    PATH_FIELD = "file_path"
    SPLITS = ("train", "val", "test")
    DESCRIPTION = (
        "CUHK-PEDES text-based person retrieval benchmark: pedestrian images from five re-identification "
        "datasets, each described by two free-form English sentences. Train 34,054 images / 11,003 ids, "
        "val 3,078 / 1,000, test 3,074 images / 6,156 captions / 1,000 ids."
    )
    HOMEPAGE = "https://github.com/ShuangLI59/Person-Search-with-Natural-Language-Description"

    def entry_split(self, entry: dict, where: str) -> str:
        if not isinstance(entry, dict) or "split" in entry:
            return super().entry_split(entry, where)
        person = require_field(entry, "id", int, where)
        for split, (first, last) in ID_RANGES.items():
            if first <= person <= last:
                return split
        ranges = ", ".join(f"{split} {first}-{last}" for split, (first, last) in ID_RANGES.items())
        raise ValueError(f"{where} has no 'split', and its id {person} is outside the published ranges ({ranges}).")

    CITATION = """@inproceedings{li2017person,
  title={Person Search with Natural Language Description},
  author={Li, Shuang and Xiao, Tong and Li, Hongsheng and Zhou, Bolei and Yue, Dayu and Wang, Xiaogang},
  booktitle={CVPR},
  year={2017}
}"""


__all__ = ["CuhkPedes"]
