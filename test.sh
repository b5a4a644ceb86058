#!/usr/bin/env bash
# Sets up everything from nothing and runs the whole test suite: the virtual environment,
# the build with its test extras and the data (scripts/setup_env.sh), then pytest.
# Extra arguments go to pytest, e.g. `bash test.sh -m hardening` or `bash test.sh -x -q`.
set -euo pipefail
cd "$(dirname "$0")"
IM2COLNET_EXTRAS="[test]" source scripts/setup_env.sh

# Run the installed package: the `pytest` entry point (not `python -m pytest`)
# keeps the source folder off sys.path, so the compiled build is what is tested.
exec "$VENV/bin/pytest" tests -q "$@"
