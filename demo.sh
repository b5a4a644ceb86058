#!/usr/bin/env bash
# The main job: sets up a virtual environment, builds im2colnet and runs the demo.
set -euo pipefail
cd "$(dirname "$0")"
VENV=${IM2COLNET_VENV:-.venv}
PYTHON=${PYTHON:-python3}

[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --upgrade pip
"$VENV/bin/python" -m pip install --quiet .

cd /tmp  # import the installed build, not the source folder
exec "$VENV/bin/python" -m im2colnet demo "$@"
