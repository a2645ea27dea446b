"""TFDS builder `aliexpress`: the raw AliExpress release of one country, read from
`manual_dir` by `pwiser_tf.pipelines.readers`.

Example:

>>> import tensorflow_datasets as tfds
>>> from pwiser_tf.pipelines.tfds_builders import Aliexpress
>>> builder = Aliexpress(config="nl", data_dir="~/tensorflow_datasets")   # doctest: +SKIP
>>> builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
...     manual_dir="~/Downloads/aliexpress"))                              # doctest: +SKIP
>>> train = builder.as_dataset(split="train")                              # doctest: +SKIP
"""
import tensorflow_datasets as tfds

from pwiser_tf.pipelines.readers import Layout
from pwiser_tf.pipelines.readers.aliexpress import CATEGORICAL, NUMERICAL
from pwiser_tf.pipelines.tfds_builders import common

COUNTRIES = ("nl", "es", "fr", "us")
LAYOUT = Layout("aliexpress", CATEGORICAL, NUMERICAL)


class Aliexpress(common.ManualBuilder):
    """AliExpress search exposures with click and purchase labels (Tianchi 74690)."""

    BUILDER_CONFIGS = [tfds.core.BuilderConfig(name=country,
                                               description=f"AliExpress-{country.upper()}")
                       for country in COUNTRIES]
    MANUAL_DOWNLOAD_INSTRUCTIONS = """\
AliExpress cannot be downloaded by a program: it sits behind a login on Alibaba's
Tianchi site (https://tianchi.aliyun.com/dataset/74690). Download the zip of the
country, e.g. `aliexpress_NL_datasets.zip`, and put it, or the four CSV files it
holds (`nl_user_train.csv`, `nl_item_train.csv`, `nl_user_test.csv`,
`nl_item_test.csv`), in the manual directory (default
`~/tensorflow_datasets/downloads/manual/`, or `DownloadConfig(manual_dir=...)`).
"""

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=("One row per exposed item of a search: 16 categorical ids, 63 "
                         "numerical features in [0, 1], `click` and `conversion` (click "
                         "and purchase, i.e. the CTCVR label); `row_id` is the search id."),
            features=common.features(LAYOUT),
            homepage="https://tianchi.aliyun.com/dataset/74690")

    def _split_generators(self, dl_manager):
        country = self.builder_config.name
        names = [f"{country}_{kind}_{split}.csv" for split in ("train", "test")
                 for kind in ("user", "item")]
        paths = common.find(dl_manager.manual_dir, names,
                            [f"aliexpress_{country.upper()}_datasets.zip"], dl_manager,
                            self.MANUAL_DOWNLOAD_INSTRUCTIONS)
        return {"train": self._generate_examples(paths[:2]),
                "test": self._generate_examples(paths[2:])}

    def _generate_examples(self, paths):
        return common.examples("aliexpress-raw", paths, LAYOUT)
