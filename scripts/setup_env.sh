# The set-up test.sh and demo.sh share (source it from the repository's root):
# a virtual environment ($IM2COLNET_VENV, default .venv) with im2colnet built and
# installed (plus the extras in $IM2COLNET_EXTRAS, e.g. "[test]"), and the data:
# MNIST from ../shared/data beside the repository unless IM2COLNET_DATA is set,
# Fashion-MNIST from its Debian package (installed here when we are root).
# Sets VENV to the environment's absolute path.
VENV=${IM2COLNET_VENV:-.venv}
PYTHON=${PYTHON:-python3}

[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
VENV="$(cd "$VENV" && pwd)"
"$VENV/bin/python" -m pip install --quiet --upgrade pip
"$VENV/bin/python" -m pip install --quiet ".${IM2COLNET_EXTRAS:-}"

if [ -z "${IM2COLNET_DATA:-}" ] && [ -d ../shared/data/mnist ]; then
    export IM2COLNET_DATA="$(cd ../shared/data && pwd)"
fi
if [ ! -d /usr/share/datasets/fashion-mnist ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "installing Fashion-MNIST (Debian package dataset-fashion-mnist) ..." >&2
        { apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist; } >/dev/null 2>&1 \
            || echo "note: could not install dataset-fashion-mnist; its parts will skip" >&2
    else
        echo "note: Fashion-MNIST is not installed; its parts will skip" \
             "(get it with 'sudo apt-get install dataset-fashion-mnist')" >&2
    fi
fi
