#!/usr/bin/env bash
# Browse the local tracking store read-mostly with `mlflow ui`, bound to 127.0.0.1.
# Same as `ltstudy ui studies/quickstart.toml`. PORT defaults to 5000.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
PORT="${PORT:-5000}"
exec mlflow ui --backend-store-uri "sqlite:///$here/mlflow.db" --default-artifact-root "file://$here/artifacts" \
    --host 127.0.0.1 --port "$PORT"
