"""Multi-task CTR/CVR networks on TFRS (tf-keras)."""
