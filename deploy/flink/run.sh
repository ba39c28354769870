#!/usr/bin/env bash
# mlmprep on an Apache Flink cluster through Beam's FlinkRunner: mlmprep starts the Flink 1.19 job
# server deploy/fetch-engines.sh fetched (or the one FLINK_JOB_SERVER_JAR names), which submits to the cluster.
#   FLINK_MASTER=flink-jobmanager:8081 IMAGE=.../mlmprep:0.1.0 PARALLELISM=64 \
#     deploy/flink/run.sh --input 's3://bucket/corpus/*.txt' --output s3://bucket/mlm/v1 --tokenizer s3://bucket/vocab.txt
# Workers run in the mlmprep container (deploy/Dockerfile): --environment_type DOCKER.
# Where Docker is not available on the task managers, run a worker pool beside
# each (python -m apache_beam.runners.worker.worker_pool_main --service_port 50000)
# and pass ENVIRONMENT_TYPE=EXTERNAL ENVIRONMENT_CONFIG=localhost:50000.
set -euo pipefail
: "${FLINK_MASTER:?set FLINK_MASTER, e.g. flink-jobmanager:8081}"
exec mlmprep run "$@" \
  --runner FlinkRunner \
  --flink_master "$FLINK_MASTER" \
  ${FLINK_JOB_SERVER_JAR:+--flink_job_server_jar "$FLINK_JOB_SERVER_JAR"} \
  ${FLINK_VERSION:+--flink_version "$FLINK_VERSION"} \
  --parallelism "${PARALLELISM:-16}" \
  --environment_type "${ENVIRONMENT_TYPE:-DOCKER}" \
  --environment_config "${ENVIRONMENT_CONFIG:-${IMAGE:?set IMAGE or ENVIRONMENT_CONFIG}}"
