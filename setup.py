"""Distribution `pwiser-tf`.

The repository keeps the networks in `models/` and the data code in `pipelines/`
so that the folders show the architecture; installed, both live inside the
`pwiser_tf` namespace (`pwiser_tf.models`, `pwiser_tf.pipelines`) and never as
top-level `models` / `pipelines` packages in site-packages.
"""
from setuptools import find_packages, setup

# Map repository folders into the pwiser_tf namespace.
PACKAGE_DIRS = {"pwiser_tf": "pwiser_tf", "pwiser_tf.models": "models",
                "pwiser_tf.pipelines": "pipelines"}


def _packages():
    packages = []
    for namespace, folder in PACKAGE_DIRS.items():
        packages.append(namespace)
        packages += [f"{namespace}.{sub}" for sub in find_packages(folder)]
    return sorted(set(packages))


setup(
    name="pwiser-tf",
    version="0.1.0",
    description=("PWiseR pairwise ranking loss, AdaFTR and multi-task CTR/CVR "
                 "models for TensorFlow, Keras and TFRS"),
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    classifiers=["License :: OSI Approved :: Apache Software License",
                 "Programming Language :: Python :: 3"],
    python_requires=">=3.10",
    package_dir=PACKAGE_DIRS,
    packages=_packages(),
    package_data={"pwiser_tf": ["configs/*.yaml"]},
    install_requires=[
        "tensorflow>=2.21,<2.22",
        "tf-keras>=2.21,<2.22",
        "tensorboard>=2.20",  # tf.summary, for the runs' TensorBoard logs
        "keras>=3.10",
        "tensorflow-recommenders>=0.7.3",
        "tensorflow-datasets>=4.9",
        "numpy",
        "pyyaml",
        "tqdm",
        "pyarrow>=14",
        "matplotlib",
        "pydantic>=2",
    ],
    extras_require={
        # Beam is in `test`: the Beam converter's tests run in CI (about 25 s and 100 MB).
        # JAX and PyTorch: the kernel and the Keras 3 losses are tested on every
        # Keras backend (tests/test_backends.py).
        "test": ["pytest>=8", "hypothesis>=6", "keras-rs>=0.2", "apache-beam>=2.50",
                 "google-crc32c", "nbformat>=5.9", "jax>=0.4.30", "torch==2.13.0"],
        "bench": ["keras-rs>=0.2"],
        "beam": ["apache-beam>=2.50", "google-crc32c"],  # crc32c: Beam's TFRecord writer
        # TFX needs ml-metadata wheels that require glibc >= 2.39 (see README).
        "tfx": ["tfx>=1.15"],
    },
    entry_points={"console_scripts": ["pwiser-tf=pwiser_tf.cli:main"]},
)
