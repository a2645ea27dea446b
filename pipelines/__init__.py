"""Data pipelines: readers, converter, synthetic data, tf.data streaming, TFDS builders."""
