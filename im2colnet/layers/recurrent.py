"""Recurrent layers: Elman RNN, LSTM and GRU, batch-first, with backpropagation through time.

The mathematics and the parameter names are PyTorch's, so weights move between
the two by name. For layer l with input x_t (F_in) and hidden state h (H):

    RNN:  h_t = tanh(x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh)      (or relu)
    LSTM: [i, f, g, o] = x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh    (gate order i, f, g, o)
          i, f, o = sigmoid(.), g = tanh(.)
          c_t = f * c_{t-1} + i * g,   h_t = o * tanh(c_t)
    GRU:  [r, z, n] parts of a = x_t W_ih^T + b_ih and b = h_{t-1} W_hh^T + b_hh
          r = sigmoid(a_r + b_r), z = sigmoid(a_z + b_z), n = tanh(a_n + r * b_n)
          h_t = (1 - z) * n + z * h_{t-1}

weight_ih_l{k} is (G*H, F_in), weight_hh_l{k} (G*H, H), bias_ih_l{k} and
bias_hh_l{k} (G*H,), with G = 1, 4, 3 gates; initial values uniform in
(-1/sqrt(H), 1/sqrt(H)) as in PyTorch.

The input projection of all time steps is one GEMM per layer: x (N*T, F_in)
W_ih^T. Only the recurrent part loops over time. The backward pass runs the
steps in reverse and collects, per step, the gradient of the input projection
(dA) and of the hidden projection (dB); then the weight gradients are single
GEMMs over all steps: dW_ih = dA^T x, dW_hh = dB^T h_prev, dx = dA W_ih.
"""
import numpy as np

from .._checks import as_float, check_int, check_shape
from .base import Layer

__all__ = ["RNN", "LSTM", "GRU", "LastTimeStep"]


def _sigmoid(x):
    # 1/(1 + e^-x) written with tanh: no overflow for any x.
    return 0.5 * (1.0 + np.tanh(0.5 * x))


class _Recurrent(Layer):
    """What the three recurrent layers share: parameters, the stacked loop, BPTT bookkeeping.

    Subclasses give GATES and the cell: ``_step`` and ``_step_backward``.
    After ``forward``: ``last_state`` is (h_n,) for RNN/GRU and (h_n, c_n) for
    LSTM, each (num_layers, N, H). After ``backward``: ``initial_state_grad``
    has the same layout (the gradient that flows into the initial state).
    """
    GATES = 1
    STATES = 1   # h only; LSTM adds c

    def __init__(self, input_size, hidden_size, num_layers=1, rng=None):
        super().__init__()
        self.input_size = check_int(input_size, "input_size")
        self.hidden_size = check_int(hidden_size, "hidden_size")
        self.num_layers = check_int(num_layers, "num_layers")
        self.last_state = None
        self.initial_state_grad = None
        self._caches = None
        self._create_params(rng)

    # -- structure ----------------------------------------------------------------
    def output_shape(self, input_shape):
        shape = check_shape(input_shape)
        if len(shape) != 2 or shape[1] != self.input_size:
            raise ValueError(f"input_shape: {type(self).__name__} expects sequences (T, {self.input_size}), "
                             f"got input_shape {shape}")
        return (shape[0], self.hidden_size)

    def _init_params(self, input_shape, rng):
        H, G = self.hidden_size, self.GATES
        bound = 1.0 / np.sqrt(H)
        for layer in range(self.num_layers):
            f_in = self.input_size if layer == 0 else H
            for name, shape in ((f"weight_ih_l{layer}", (G * H, f_in)), (f"weight_hh_l{layer}", (G * H, H)),
                                (f"bias_ih_l{layer}", (G * H,)), (f"bias_hh_l{layer}", (G * H,))):
                self.params[name] = rng.uniform(-bound, bound, shape).astype(self.dtype)
        self.zero_grads()

    def get_config(self):
        return {"input_size": self.input_size, "hidden_size": self.hidden_size,
                "num_layers": self.num_layers}

    # -- checks ---------------------------------------------------------------------
    def _check_input(self, x):
        x = as_float(x, "x", dtype=self.dtype)
        if x.ndim != 3 or x.shape[2] != self.input_size or x.shape[0] == 0 or x.shape[1] == 0:
            raise ValueError(f"x: {type(self).__name__} expects (N, T, {self.input_size}) with N, T >= 1, "
                             f"got shape {x.shape}")
        return x

    def _check_state(self, state, batch, name):
        """The initial state as a tuple of STATES arrays (num_layers, N, H); zeros when None."""
        shape = (self.num_layers, batch, self.hidden_size)
        if state is None:
            return tuple(np.zeros(shape, self.dtype) for _ in range(self.STATES))
        parts = (state,) if isinstance(state, np.ndarray) else tuple(state)
        if len(parts) != self.STATES:
            raise ValueError(f"{name}: {type(self).__name__} takes {self.STATES} state array(s) "
                             f"({'h0, c0' if self.STATES == 2 else 'h0'}), got {len(parts)}")
        out = []
        for part in parts:
            part = as_float(part, name, dtype=self.dtype)
            if part.shape != shape:
                raise ValueError(f"{name}: expected shape {shape} (num_layers, N, hidden_size), "
                                 f"got {part.shape}")
            out.append(part)
        return tuple(out)

    # -- forward ----------------------------------------------------------------------
    def forward(self, x, training=False, initial_state=None):
        """x (N, T, input_size) -> (N, T, hidden_size): the last layer's h_t for every t.

        initial_state: h0 (num_layers, N, H) -- for LSTM (h0, c0) -- or None for zeros.
        """
        self._prepare(x)
        x = self._check_input(x)
        N, T, _ = x.shape
        state0 = self._check_state(initial_state, N, "initial_state")
        finals = [np.empty((self.num_layers, N, self.hidden_size), self.dtype) for _ in range(self.STATES)]
        caches = []
        seq = x
        for layer in range(self.num_layers):
            w_ih, w_hh = self.params[f"weight_ih_l{layer}"], self.params[f"weight_hh_l{layer}"]
            b_ih, b_hh = self.params[f"bias_ih_l{layer}"], self.params[f"bias_hh_l{layer}"]
            # The input projection of every step at once: one GEMM.
            proj = (seq.reshape(N * T, -1) @ w_ih.T + b_ih).reshape(N, T, -1)
            state = tuple(s[layer] for s in state0)
            out = np.empty((N, T, self.hidden_size), self.dtype)
            steps = []
            for t in range(T):
                state, cache = self._step(proj[:, t], state, w_hh, b_hh)
                out[:, t] = state[0]
                steps.append(cache)
            for k, s in enumerate(state):
                finals[k][layer] = s
            caches.append((seq, steps))
            seq = out
        self.last_state = tuple(finals)
        self._caches = caches if training else None
        return seq

    # -- backward ---------------------------------------------------------------------
    def backward(self, dy, need_dx=True, d_last_state=None):
        """dy (N, T, H): gradient of the output sequence. d_last_state: optional gradient of
        last_state (same layout). Fills grads and initial_state_grad; returns dx (N, T, input_size)."""
        caches = self._saved(self._caches)
        dy = as_float(dy, "dy", dtype=self.dtype)
        N, T = caches[0][0].shape[:2]
        if dy.shape != (N, T, self.hidden_size):
            raise ValueError(f"dy: expected shape {(N, T, self.hidden_size)}, got {dy.shape}")
        d_final = self._check_state(d_last_state, N, "d_last_state")
        d_init = [np.empty((self.num_layers, N, self.hidden_size), self.dtype) for _ in range(self.STATES)]
        d_seq = dy
        for layer in reversed(range(self.num_layers)):
            seq, steps = caches[layer]
            w_ih, w_hh = self.params[f"weight_ih_l{layer}"], self.params[f"weight_hh_l{layer}"]
            d_proj = np.empty((N, T, self.GATES * self.hidden_size), self.dtype)   # dA
            d_hid = np.empty_like(d_proj)                                          # dB
            h_prev = np.empty((N, T, self.hidden_size), self.dtype)
            d_state = [d[layer].copy() for d in d_final]
            for t in reversed(range(T)):
                d_state[0] = d_state[0] + d_seq[:, t]
                d_proj[:, t], d_hid[:, t], d_state = self._step_backward(d_state, steps[t], w_hh)
                h_prev[:, t] = steps[t][0]
            for k in range(self.STATES):
                d_init[k][layer] = d_state[k]
            flat_a, flat_b = d_proj.reshape(N * T, -1), d_hid.reshape(N * T, -1)
            self.grads[f"weight_ih_l{layer}"] = flat_a.T @ seq.reshape(N * T, -1)
            self.grads[f"bias_ih_l{layer}"] = flat_a.sum(axis=0)
            self.grads[f"weight_hh_l{layer}"] = flat_b.T @ h_prev.reshape(N * T, -1)
            self.grads[f"bias_hh_l{layer}"] = flat_b.sum(axis=0)
            if layer > 0 or need_dx:
                d_seq = (flat_a @ w_ih).reshape(N, T, -1)
        self.initial_state_grad = tuple(d_init)
        return d_seq if need_dx else None

    # -- the cell (subclasses) ----------------------------------------------------------
    def _step(self, proj_t, state, w_hh, b_hh):
        """One time step: (new state tuple, cache whose first item is h_{t-1})."""
        raise NotImplementedError

    def _step_backward(self, d_state, cache, w_hh):
        """(dA_t, dB_t, gradient of the previous state as a list) from the state's gradient."""
        raise NotImplementedError


class RNN(_Recurrent):
    """Elman RNN: h_t = tanh(x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh) (nonlinearity "tanh" or "relu")."""

    def __init__(self, input_size, hidden_size, num_layers=1, nonlinearity="tanh", rng=None):
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"nonlinearity: expected 'tanh' or 'relu', got {nonlinearity!r}")
        super().__init__(input_size, hidden_size, num_layers, rng)
        self.nonlinearity = nonlinearity

    def get_config(self):
        return {**super().get_config(), "nonlinearity": self.nonlinearity}

    def _step(self, proj_t, state, w_hh, b_hh):
        h_prev = state[0]
        pre = proj_t + h_prev @ w_hh.T + b_hh
        h = np.tanh(pre) if self.nonlinearity == "tanh" else np.maximum(pre, 0)
        return (h,), (h_prev, h)

    def _step_backward(self, d_state, cache, w_hh):
        h_prev, h = cache
        d_pre = d_state[0] * ((1 - h * h) if self.nonlinearity == "tanh" else (h > 0))
        return d_pre, d_pre, [d_pre @ w_hh]


class LSTM(_Recurrent):
    """Long short-term memory, gates i, f, g, o: c_t = f*c_{t-1} + i*g, h_t = o*tanh(c_t)."""
    GATES = 4
    STATES = 2

    def _step(self, proj_t, state, w_hh, b_hh):
        h_prev, c_prev = state
        H = self.hidden_size
        pre = proj_t + h_prev @ w_hh.T + b_hh
        i, f, o = _sigmoid(pre[:, :H]), _sigmoid(pre[:, H:2 * H]), _sigmoid(pre[:, 3 * H:])
        g = np.tanh(pre[:, 2 * H:3 * H])
        c = f * c_prev + i * g
        tanh_c = np.tanh(c)
        return (o * tanh_c, c), (h_prev, c_prev, i, f, g, o, tanh_c)

    def _step_backward(self, d_state, cache, w_hh):
        h_prev, c_prev, i, f, g, o, tanh_c = cache
        dh, dc = d_state
        dc = dc + dh * o * (1 - tanh_c * tanh_c)
        d_pre = np.concatenate([dc * g * i * (1 - i),            # d(pre_i)
                                dc * c_prev * f * (1 - f),       # d(pre_f)
                                dc * i * (1 - g * g),            # d(pre_g)
                                dh * tanh_c * o * (1 - o)], axis=1)   # d(pre_o)
        return d_pre, d_pre, [d_pre @ w_hh, dc * f]


class GRU(_Recurrent):
    """Gated recurrent unit, gates r, z, n: n = tanh(a_n + r*b_n), h_t = (1 - z)*n + z*h_{t-1}."""
    GATES = 3

    def _step(self, proj_t, state, w_hh, b_hh):
        h_prev = state[0]
        H = self.hidden_size
        hid = h_prev @ w_hh.T + b_hh
        r = _sigmoid(proj_t[:, :H] + hid[:, :H])
        z = _sigmoid(proj_t[:, H:2 * H] + hid[:, H:2 * H])
        n = np.tanh(proj_t[:, 2 * H:] + r * hid[:, 2 * H:])
        return ((1 - z) * n + z * h_prev,), (h_prev, r, z, n, hid[:, 2 * H:])

    def _step_backward(self, d_state, cache, w_hh):
        h_prev, r, z, n, hid_n = cache
        dh = d_state[0]
        d_n = dh * (1 - z) * (1 - n * n)                 # d(pre_n)
        d_z = dh * (h_prev - n) * z * (1 - z)            # d(pre_z)
        d_r = d_n * hid_n * r * (1 - r)                  # d(pre_r)
        d_proj = np.concatenate([d_r, d_z, d_n], axis=1)
        d_hid = np.concatenate([d_r, d_z, d_n * r], axis=1)
        return d_proj, d_hid, [dh * z + d_hid @ w_hh]


class LastTimeStep(Layer):
    """(N, T, F) -> (N, F): the last time step, connecting a recurrent layer to a classifier."""

    def __init__(self):
        super().__init__()
        self._shape = None

    def output_shape(self, input_shape):
        if len(input_shape) != 2:
            raise ValueError(f"input_shape: LastTimeStep expects sequences (T, F), got {tuple(input_shape)}")
        return (input_shape[1],)

    def forward(self, x, training=False):
        x = np.asarray(x)
        if x.ndim != 3:
            raise ValueError(f"x: LastTimeStep expects (N, T, F), got shape {x.shape}")
        self._shape = x.shape if training else None
        return x[:, -1]

    def backward(self, dy, need_dx=True):
        shape = self._saved(self._shape)
        dx = np.zeros(shape, dtype=np.asarray(dy).dtype)
        dx[:, -1] = dy
        return dx
