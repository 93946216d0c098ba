"""CUHK-PEDES: 40,206 images of 13,003 identities, two captions per image (Li et al., CVPR 2017)."""

from ._common import PedesBenchmarkBuilder


class CuhkPedes(PedesBenchmarkBuilder):
    """``reid_raw.json`` (list of {split, captions, file_path, id, processed_tokens}) plus ``imgs/``."""

    ANNOTATION_FILE = "reid_raw.json"
    PATH_FIELD = "file_path"
    SPLITS = ("train", "val", "test")
    DESCRIPTION = (
        "CUHK-PEDES text-based person retrieval benchmark: pedestrian images from five re-identification "
        "datasets, each described by two free-form English sentences. Train 34,054 images / 11,003 ids, "
        "val 3,078 / 1,000, test 3,074 images / 6,156 captions / 1,000 ids."
    )
    HOMEPAGE = "https://github.com/ShuangLI59/Person-Search-with-Natural-Language-Description"
    CITATION = """@inproceedings{li2017person,
  title={Person Search with Natural Language Description},
  author={Li, Shuang and Xiao, Tong and Li, Hongsheng and Zhou, Bolei and Yue, Dayu and Wang, Xiaogang},
  booktitle={CVPR},
  year={2017}
}"""


__all__ = ["CuhkPedes"]
