#!/usr/bin/env bash
# mlmprep on an Apache Spark cluster through Beam's SparkRunner (the Python SDK
# starts Beam's Spark job server, or submits an uber jar with --spark_submit_uber_jar).
#   SPARK_MASTER=spark://spark-master:7077 IMAGE=.../mlmprep:0.1.0 \
#     deploy/spark/run.sh --input 'hdfs:///corpus/*.txt' --output hdfs:///mlm/v1 --tokenizer vocab.txt
# Workers run in the mlmprep container (deploy/Dockerfile): --environment_type DOCKER;
# ENVIRONMENT_TYPE=EXTERNAL ENVIRONMENT_CONFIG=localhost:50000 uses worker pools instead.
set -euo pipefail
: "${SPARK_MASTER:?set SPARK_MASTER, e.g. spark://spark-master:7077}"
exec mlmprep run "$@" \
  --runner SparkRunner \
  --spark_master_url "$SPARK_MASTER" \
  --spark_version "${SPARK_VERSION:-3}" \
  --environment_type "${ENVIRONMENT_TYPE:-DOCKER}" \
  --environment_config "${ENVIRONMENT_CONFIG:-${IMAGE:?set IMAGE or ENVIRONMENT_CONFIG}}"
