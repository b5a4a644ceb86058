"""The package imports its compiled kernels, and a missing build says how to build."""
import subprocess
import sys

import im2colnet


def test_build_info():
    info = im2colnet.build_info()
    assert set(info) == {"openmp", "boundscheck", "kernel", "kernels_supported"}
    assert info["kernel"] in info["kernels_supported"]


def test_source_tree_without_build_gives_readable_error(tmp_path):
    """Importing from an unbuilt copy of the sources names the build command."""
    import shutil
    import os
    src = os.path.dirname(im2colnet.__file__)
    dst = tmp_path / "im2colnet"
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("*.so", "*.pyd", "__pycache__"))
    proc = subprocess.run([sys.executable, "-c", "import im2colnet"], cwd=tmp_path,
                          capture_output=True, text=True)
    assert proc.returncode != 0
    assert "pip install" in proc.stderr and "compiled kernels" in proc.stderr
