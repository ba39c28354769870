"""mlmprep: raw text to masked-language-model pre-training shards on Apache Beam.

The top-level folders install under one namespace (``mlmprep.pipeline``,
``mlmprep.transforms``, ...) because PyPI already has unrelated distributions
named ``pipeline`` and ``transforms``. The same file is what Beam's
``--setup_file`` ships to remote workers.
"""

import setuptools

PACKAGES = {
    "mlmprep.pipeline": "pipeline",
    "mlmprep.transforms": "transforms",
    "mlmprep.transforms.beam": "transforms/beam",
    # Importing it needs the [trainer] extra; the pipeline never does.
    "mlmprep.trainer": "trainer",
}

# What a Beam worker needs: no TensorFlow here, workers never import it.
REQUIRED = [
    "apache-beam>=2.60,<3",
    "tokenizers>=0.20,<1",
    "pyarrow>=14,<26",
    "numpy>=1.24",
    # Fast CRC32C for TFRecord framing (pure-Python CRCs are ~100x slower).
    "google-crc32c>=1.5",
    # Beam decompresses .zst input with it.
    "zstandard>=0.18",
    # Sentence splitting for --sentence_pairs (Wikimedia's, ~300 languages, in Rust).
    "sentencex>=1.0",
    # mlmprep run --config: the build file (Beam depends on it too).
    "pyyaml>=6",
]

ARRAY_RECORD = "array_record>=0.8"

TRAINER = [
    "tensorflow>=2.16",
    "keras-hub>=0.20",
    "tensorboard>=2.16",
    # mlmprep export writes Hugging Face's weight format.
    "safetensors>=0.4",
]

setuptools.setup(
    name="mlmprep",
    version="0.1.0",
    description="Masked-language-model pre-training data on Apache Beam, and a Keras trainer.",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=list(PACKAGES),
    package_dir=PACKAGES,
    install_requires=REQUIRED,
    extras_require={
        "trainer": TRAINER,
        # Dataflow: the runner and gs:// file system.
        "gcp": ["apache-beam[gcp]"],
        # --formats arrayrecord: array_record writes (and reads) the shards; a Beam worker then needs it.
        "arrayrecord": [ARRAY_RECORD],
        # Tests parse the TFRecord output with TensorFlow itself and build a Dataflow job offline;
        # tests/test_near_dedup.py holds the MinHash LSH's candidates against datasketch's.
        "dev": TRAINER + ["apache-beam[gcp]", "pytest>=7", "ruff>=0.5", ARRAY_RECORD, "datasketch"],
        # deploy/airflow's DAG and its test (Airflow runs it there). The Beam floor keeps pip's resolver
        # from backtracking through old Beam releases to fit the providers beside TensorFlow.
        "airflow": [
            "apache-airflow>=3.3,<4",
            "apache-airflow-providers-apache-beam>=6",
            "apache-airflow-providers-google>=18",
            "apache-beam[gcp]>=2.77,<3",
        ],
        # The Parquet shards in Hugging Face's stack (tests/test_hf.py). PyTorch's default wheel
        # is a CUDA build of several GB: install the CPU one first where there is no GPU.
        "hf": ["torch>=2.1", "transformers>=4.40", "datasets>=2.14"],
        # The loaders of the other formats, for the tests that read them back: MosaicML Streaming's
        # StreamingDataset (MDS; it needs PyTorch: install it first, as for [hf]) and Grain (ArrayRecord).
        "loaders": ["streaming-community>=0.14,<0.15", "grain>=0.2", ARRAY_RECORD],
        # mlmprep report's plots.
        "report": ["matplotlib>=3.7"],
        # bench/throughput.py's Hugging Face baseline; bench/sentence_split.py's other splitters.
        "bench": ["datasets>=2.14", "transformers>=4.40", "blingfire", "pysbd"],
    },
    entry_points={"console_scripts": ["mlmprep = mlmprep.pipeline.cli:main"]},
    license="Apache-2.0",
)
