"""The models' input contract: features of the wrong width, or a multi-valued field
without the values its schema promises, get one clear error instead of a
TensorFlow shape error or silently changed predictions."""
import pytest
import tensorflow as tf

from pwiser_tf.errors import InputError
from pwiser_tf.models.embedding import FeatureEmbedding
from pwiser_tf.pipelines.schema import Field, Schema

SCHEMA = Schema("toy", categorical=(Field("a", 5), Field("b", 3), Field("c", 4)),
                numerical=("x", "y"), multi_valued=(Field("tags", 4, has_values=True),))
GOOD = {"categorical": tf.constant([[1, 2, 3]], tf.int64),
        "numerical": tf.constant([[0.5, 0.1]]),
        "mv_tags": tf.constant([[2, -1]], tf.int64),
        "mv_tags_values": tf.constant([[0.3, 0.0]])}


def test_good_features_embed():
    assert FeatureEmbedding(SCHEMA, embedding_dim=2)(GOOD).shape == (1, 10)


@pytest.mark.parametrize("key, value, message", [
    ("categorical", tf.constant([[1, 2, 3, 4]], tf.int64),
     r"features\['categorical'\] must have 3 columns .* got shape \(1, 4\)"),
    ("numerical", tf.constant([[0.5]]),
     r"features\['numerical'\] must have 2 columns .* got shape \(1, 1\)"),
])
def test_a_feature_of_the_wrong_width_is_named(key, value, message):
    with pytest.raises(InputError, match=message):
        FeatureEmbedding(SCHEMA, embedding_dim=2)({**GOOD, key: value})


def test_missing_values_of_a_weighted_field_are_refused():
    features = {k: v for k, v in GOOD.items() if k != "mv_tags_values"}
    with pytest.raises(InputError, match=r"features lack 'mv_tags_values'.*'tags'"):
        FeatureEmbedding(SCHEMA, embedding_dim=2)(features)
