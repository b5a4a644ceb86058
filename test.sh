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

# Run the installed package: the `pytest` entry point (not `python -m pytest`)
# keeps the source folder off sys.path, so the compiled build is what is tested.
exec "$VENV/bin/pytest" tests -q "$@"
