"""TFDS builder `ali_ccp`: the raw Ali-CCP release (skeleton + common features),
read from `manual_dir` by `pwiser_tf.pipelines.readers` with every value of the
multi-valued fields kept.

Example:

>>> import tensorflow_datasets as tfds
>>> from pwiser_tf.pipelines.tfds_builders import AliCcp
>>> builder = AliCcp(data_dir="~/tensorflow_datasets")                      # doctest: +SKIP
>>> builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
...     manual_dir="~/Downloads/ali_ccp"))                                   # doctest: +SKIP
>>> train = builder.as_dataset(split="train")                                # doctest: +SKIP
"""
import tensorflow_datasets as tfds

from pwiser_tf.pipelines.readers import Layout
from pwiser_tf.pipelines.readers.tokens import MULTI, SINGLE, VALUED
from pwiser_tf.pipelines.tfds_builders import common

LAYOUT = Layout("ali-ccp", SINGLE, tuple(f"D{name}" for name in VALUED),
                tuple((name, True) for name in MULTI))


class AliCcp(common.ManualBuilder):
    """Ali-CCP: Taobao exposures with click and conversion labels (Tianchi 408, ESMM)."""

    MANUAL_DOWNLOAD_INSTRUCTIONS = """\
Ali-CCP cannot be downloaded by a program: it sits behind a login on Alibaba's
Tianchi site (https://tianchi.aliyun.com/dataset/408). Download
`sample_train.tar.gz` and `sample_test.tar.gz` and put them, or the files they
hold (`sample_skeleton_train.csv`, `common_features_train.csv`,
`sample_skeleton_test.csv`, `common_features_test.csv`), in the manual directory
(default `~/tensorflow_datasets/downloads/manual/`, or
`DownloadConfig(manual_dir=...)`). Unpacked, the files take about 161 GB.
"""

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=(
                "One row per exposure: the single-valued user and item fields as raw "
                "feature ids (0 where absent), the values of the crosses 508, 509, 702, "
                "853 as `numerical`, the multi-valued 210, 109_14, 110_14, 127_14, 150_14 "
                "whole as `mv_<field>` with `mv_<field>_values`, `click` and "
                "`conversion` (CTCVR); `row_id` is the sample id. Rows with a "
                "conversion but no click are dropped, as in every public pipeline."),
            features=common.features(LAYOUT),
            homepage="https://tianchi.aliyun.com/dataset/408")

    def _split_generators(self, dl_manager):
        splits = {}
        for split in ("train", "test"):
            splits[split] = self._generate_examples(common.find(
                dl_manager.manual_dir,
                [f"sample_skeleton_{split}.csv", f"common_features_{split}.csv"],
                [f"sample_{split}.tar.gz"], dl_manager, self.MANUAL_DOWNLOAD_INSTRUCTIONS))
        return splits

    def _generate_examples(self, paths):
        return common.examples("ali-ccp-raw", paths, LAYOUT)
