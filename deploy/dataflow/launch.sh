#!/usr/bin/env bash
# Builds the mlmprep container and Flex Template, then launches a run.
#   PROJECT=my-project REGION=us-central1 BUCKET=my-bucket deploy/dataflow/launch.sh \
#     gs://my-bucket/corpus/*.txt.gz gs://my-bucket/mlm/v1 gs://my-bucket/vocab.txt
set -euo pipefail
: "${PROJECT:?set PROJECT}" "${REGION:?set REGION}" "${BUCKET:?set BUCKET}"
INPUT=${1:?input pattern} OUTPUT=${2:?output directory} TOKENIZER=${3:?tokenizer path}
cd "$(dirname "$0")/../.."
VERSION=$(python3 -c "import re; print(re.search(r'version=\"([^\"]+)\"', open('setup.py').read()).group(1))")
IMAGE="$REGION-docker.pkg.dev/$PROJECT/mlmprep/mlmprep:$VERSION"
TEMPLATE="gs://$BUCKET/templates/mlmprep-$VERSION.json"

gcloud builds submit --project "$PROJECT" --region "$REGION" \
  --config /dev/stdin . <<YAML
steps:
- name: gcr.io/cloud-builders/docker
  args: [build, -f, deploy/Dockerfile, -t, "$IMAGE", .]
images: ["$IMAGE"]
YAML

gcloud dataflow flex-template build "$TEMPLATE" --project "$PROJECT" \
  --image "$IMAGE" --sdk-language PYTHON --metadata-file deploy/dataflow/metadata.json

gcloud dataflow flex-template run "mlmprep-$(date +%Y%m%d-%H%M%S)" --project "$PROJECT" --region "$REGION" \
  --template-file-gcs-location "$TEMPLATE" \
  --parameters "input=$INPUT,output=$OUTPUT,tokenizer=$TOKENIZER,sdk_container_image=$IMAGE" \
  --temp-location "gs://$BUCKET/tmp"
