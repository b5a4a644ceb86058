"""ONNX export and import: run an im2colnet model elsewhere, or bring one here.

    import im2colnet.onnx
    im2colnet.onnx.export(model, "lenet5.onnx")      # ONNX Runtime, Netron, OpenVINO, ...
    model = im2colnet.onnx.load("lenet5.onnx")        # a Sequential again

Needs the ``onnx`` package (``pip install 'im2colnet[onnx]'``); the rest of
im2colnet never imports this subpackage.
"""
try:
    import onnx  # noqa: F401  -- the one place that turns a missing onnx into a clear message
except ImportError as _exc:
    raise ImportError("im2colnet.onnx needs the onnx package: pip install 'im2colnet[onnx]' "
                      f"(or pip install onnx) ({_exc})") from None

from ._export import export  # noqa: E402
from ._load import load  # noqa: E402

__all__ = ["export", "load"]
