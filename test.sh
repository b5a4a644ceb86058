#!/usr/bin/env bash
# Sets up everything from nothing and runs the whole test suite:
# a virtual environment (.venv), a build of im2colnet with its test extras, pytest.
# Extra arguments go to pytest, e.g. `bash test.sh -m hardening` or `bash test.sh -x -q`.
set -euo pipefail
cd "$(dirname "$0")"
VENV=${IM2COLNET_VENV:-.venv}
PYTHON=${PYTHON:-python3}

[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --upgrade pip
"$VENV/bin/python" -m pip install --quiet ".[test]"

# Real data for the dataset and model-zoo tests (they skip with a reason without it):
# MNIST from ../shared/data beside the repository, Fashion-MNIST from its Debian package.
if [ -z "${IM2COLNET_DATA:-}" ] && [ -d ../shared/data/mnist ]; then
    export IM2COLNET_DATA="$(cd ../shared/data && pwd)"
fi
if [ ! -d /usr/share/datasets/fashion-mnist ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    { apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist; } >/dev/null 2>&1 \
        || echo "note: could not install dataset-fashion-mnist; its tests will skip" >&2
fi

# Run the installed package: the `pytest` entry point (not `python -m pytest`)
# keeps the source folder off sys.path, so the compiled build is what is tested.
exec "$VENV/bin/pytest" tests -q "$@"
