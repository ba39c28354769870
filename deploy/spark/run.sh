#!/usr/bin/env bash
# mlmprep on an Apache Spark cluster through Beam's SparkRunner: mlmprep starts the Spark 3 job server
# deploy/fetch-engines.sh fetched (or the one SPARK_JOB_SERVER_JAR names), which submits to the cluster.
#   SPARK_MASTER=spark://spark-master:7077 IMAGE=.../mlmprep:0.1.0 \
#     deploy/spark/run.sh --input 'hdfs:///corpus/*.txt' --output hdfs:///mlm/v1 --tokenizer vocab.txt
# Workers run in the mlmprep container (deploy/Dockerfile): --environment_type DOCKER;
# ENVIRONMENT_TYPE=EXTERNAL ENVIRONMENT_CONFIG=localhost:50000 uses worker pools instead.
set -euo pipefail
: "${SPARK_MASTER:?set SPARK_MASTER, e.g. spark://spark-master:7077}"
exec mlmprep run "$@" \
  --runner SparkRunner \
  --spark_master_url "$SPARK_MASTER" \
  ${SPARK_JOB_SERVER_JAR:+--spark_job_server_jar "$SPARK_JOB_SERVER_JAR"} \
  --environment_type "${ENVIRONMENT_TYPE:-DOCKER}" \
  --environment_config "${ENVIRONMENT_CONFIG:-${IMAGE:?set IMAGE or ENVIRONMENT_CONFIG}}"
