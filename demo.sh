#!/usr/bin/env bash
# The main job: sets up a virtual environment, builds im2colnet and runs the demo
# (train LeNet-5 for an epoch, score the pretrained models, the quick benchmark table).
# Extra arguments go to `im2colnet demo`, e.g. `bash demo.sh --no-bench`.
set -euo pipefail
cd "$(dirname "$0")"
VENV=${IM2COLNET_VENV:-.venv}
PYTHON=${PYTHON:-python3}

[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
VENV="$(cd "$VENV" && pwd)"  # absolute: the demo runs from another folder
"$VENV/bin/python" -m pip install --quiet --upgrade pip
"$VENV/bin/python" -m pip install --quiet .

# Data: MNIST from ../shared/data beside the repository (unless IM2COLNET_DATA is set),
# Fashion-MNIST from its Debian package (installed here when we are root).
if [ -z "${IM2COLNET_DATA:-}" ] && [ -d ../shared/data/mnist ]; then
    export IM2COLNET_DATA="$(cd ../shared/data && pwd)"
fi
if [ ! -d /usr/share/datasets/fashion-mnist ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "installing Fashion-MNIST (Debian package dataset-fashion-mnist) ..."
        { apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist; } >/dev/null 2>&1 \
            || echo "note: could not install dataset-fashion-mnist; the demo skips Fashion-MNIST" >&2
    else
        echo "note: Fashion-MNIST is not installed; get it with" \
             "'sudo apt-get install dataset-fashion-mnist'" >&2
    fi
fi

cd /tmp  # import the installed build, not the source folder
exec "$VENV/bin/python" -m im2colnet demo --no-install "$@"
