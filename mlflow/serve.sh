#!/usr/bin/env bash
# Serve the local tracking store (mlflow/mlflow.db + mlflow/artifacts) with `mlflow server`.
# Binds to 127.0.0.1 unless HOST is set; workers then log with --tracking-uri http://HOST:PORT.
#   mlflow/serve.sh                      # http://127.0.0.1:5000
#   HOST=0.0.0.0 PORT=5001 mlflow/serve.sh
#   BACKEND=postgresql+psycopg://user:pw@dbhost/mlflow mlflow/serve.sh
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
HOST="${HOST:-127.0.0.1}"
PORT="${PORT:-5000}"
BACKEND="${BACKEND:-sqlite:///$here/mlflow.db}"
ARTIFACTS="${ARTIFACTS:-$here/artifacts}"
mkdir -p "$ARTIFACTS"
echo "MLflow server: http://$HOST:$PORT (store ${BACKEND%%://*}://…, artifacts $ARTIFACTS)"
exec mlflow server --backend-store-uri "$BACKEND" --artifacts-destination "$ARTIFACTS" \
    --host "$HOST" --port "$PORT"
