"""tf-keras tests on virtual CPU devices: run in their own process, started by
`tests/test_distributed_pwiser.py`, because the CPU must be split into logical
devices before TensorFlow initialises (the main session has initialised it)."""
import os
import sys

if os.environ.get("PWISER_TEST_DISTRIBUTED") != "1":
    raise RuntimeError("tests/distributed runs with PWISER_TEST_DISTRIBUTED=1 "
                       "(tests/test_distributed_pwiser.py starts it)")

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import distributed_cases  # noqa: E402

distributed_cases.split_cpu(4)
