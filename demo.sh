#!/usr/bin/env bash
# The main job: sets up the virtual environment, the build and the data
# (scripts/setup_env.sh), then runs the demo (train LeNet-5 for an epoch, score the
# pretrained models, the quick benchmark table).
# Extra arguments go to `im2colnet demo`, e.g. `bash demo.sh --no-bench`.
set -euo pipefail
cd "$(dirname "$0")"
source scripts/setup_env.sh

cd /tmp  # import the installed build, not the source folder
exec "$VENV/bin/python" -m im2colnet demo "$@"
