"""What export and import share: the opsets we write and read, and the gate orders."""
import numpy as np

#: The oldest opset we write: Softmax normalises over one axis from opset 13 on, and
#: our graphs are written in those terms.
MIN_OPSET = 13

#: Recurrent layer -> (ONNX op, the order of our gate blocks in ONNX's order).
#: Ours (PyTorch's): LSTM i, f, g, o; GRU r, z, n. ONNX: LSTM i, o, f, c; GRU z, r, h.
RECURRENT = {"RNN": ("RNN", (0,)), "LSTM": ("LSTM", (0, 3, 1, 2)), "GRU": ("GRU", (1, 0, 2))}


def to_onnx_gates(array, order):
    """Rows (G*H, ...) in our gate order -> ONNX's: block k of the result is our block order[k]."""
    blocks = np.split(array, len(order), axis=0)
    return np.concatenate([blocks[k] for k in order], axis=0)


def from_onnx_gates(array, order):
    """The inverse of to_onnx_gates."""
    blocks = np.split(array, len(order), axis=0)
    ours = [None] * len(order)
    for k, src in enumerate(order):
        ours[src] = blocks[k]
    return np.concatenate(ours, axis=0)
