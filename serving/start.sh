#!/usr/bin/env bash
# Starts TF Serving 2.16 (and Prometheus) on a run's pushed models with Docker
# Compose and waits until the model is AVAILABLE.
#
#   serving/start.sh [SERVING_DIR]      default SERVING_DIR: runs/fer2013/serving
#
# SERVING_DIR holds <model name>/<version>/ as the Pusher writes them; the model
# name served is the one in serving/config/models.config (fer2013-dcnn).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
serving_dir="${1:-runs/fer2013/serving}"
model="$(sed -n 's/^ *name: "\(.*\)"/\1/p' "$here/config/models.config" | head -1)"

if ! docker info >/dev/null 2>&1; then
  echo "start.sh: Docker is not available here (not installed, or its daemon is not running); TF Serving needs it (or Kubernetes: kubectl apply -k serving/)." >&2
  exit 3
fi
if ! ls "$serving_dir/$model"/*/saved_model.pb >/dev/null 2>&1; then
  echo "start.sh: no pushed model at $serving_dir/$model/<version>/ (run the pipeline first)" >&2
  exit 2
fi
SERVING_DIR="$(cd "$serving_dir" && pwd)" docker compose -f "$here/docker-compose.yml" up -d
for _ in $(seq 90); do
  if curl -fs "http://localhost:8501/v1/models/$model" | grep -q '"AVAILABLE"'; then
    echo "TF Serving is up: REST http://localhost:8501/v1/models/$model, gRPC localhost:8500, Prometheus http://localhost:9090"
    exit 0
  fi
  sleep 2
done
echo "start.sh: $model did not become AVAILABLE within 3 minutes; see: docker compose -f $here/docker-compose.yml logs tf-serving" >&2
exit 1
