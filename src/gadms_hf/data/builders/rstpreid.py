"""RSTPReid: 20,505 images of 4,101 identities from MSMT17, two captions per image (Zhu et al., ACM MM 2021)."""

from ._common import PedesBenchmarkBuilder


class RstpReid(PedesBenchmarkBuilder):
    """``data_captions.json`` (list of {id, img_path, captions, split}) plus ``imgs/``."""

    ANNOTATION_FILE = "data_captions.json"
    PATH_FIELD = "img_path"
    SPLITS = ("train", "val", "test")
    DESCRIPTION = (
        "RSTPReid text-based person retrieval benchmark: five MSMT17 images per identity taken by different "
        "cameras, two English captions each. Train 18,505 images / 3,701 ids, val and test 1,000 images / "
        "200 ids each."
    )
    HOMEPAGE = "https://github.com/NjtechCVLab/RSTPReid-Dataset"
    CITATION = """@inproceedings{zhu2021dssl,
  title={DSSL: Deep Surroundings-person Separation Learning for Text-based Person Retrieval},
  author={Zhu, Aichun and others},
  booktitle={ACM Multimedia},
  year={2021}
}"""


__all__ = ["RstpReid"]
