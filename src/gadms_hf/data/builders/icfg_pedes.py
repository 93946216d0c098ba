"""ICFG-PEDES: 54,522 images of 4,102 identities from MSMT17, one caption per image (Ding et al., 2021)."""

from ._common import PedesBenchmarkBuilder


class IcfgPedes(PedesBenchmarkBuilder):
    """``ICFG-PEDES.json`` (list of {split, captions, file_path, id, processed_tokens}) plus ``imgs/``."""

    ANNOTATION_FILE = "ICFG-PEDES.json"
    PATH_FIELD = "file_path"
    SPLITS = ("train", "test")
    DESCRIPTION = (
        "ICFG-PEDES text-based person retrieval benchmark: MSMT17 pedestrian images, one fine-grained English "
        "caption each. Train 34,674 images / 3,102 ids, test 19,848 images / 1,000 ids; no validation split."
    )
    HOMEPAGE = "https://github.com/zifyloo/SSAN"
    CITATION = """@article{ding2021semantically,
  title={Semantically Self-Aligned Network for Text-to-Image Part-aware Person Re-identification},
  author={Ding, Zefeng and Ding, Changxing and Shao, Zhiyin and Tao, Dacheng},
  journal={arXiv preprint arXiv:2107.12666},
  year={2021}
}"""


__all__ = ["IcfgPedes"]
