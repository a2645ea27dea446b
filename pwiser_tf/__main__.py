"""`python -m pwiser_tf`: the same command line as `pwiser-tf`."""
import sys

from pwiser_tf.cli import main

if __name__ == "__main__":
    sys.exit(main())
