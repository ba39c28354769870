#!/usr/bin/env bash
# Fetches Beam's Flink and Spark job servers (assembled with Maven, see pipeline/engines.py) into
# $MLMPREP_ENGINES, or .engines/ in the repository (git-ignored), once; prints where they are.
# `mlmprep run --runner FlinkRunner ...` and `--runner SparkRunner ...` find them there.
set -euo pipefail
exec python -m mlmprep.pipeline.engines "$@"
