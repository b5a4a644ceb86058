"""Optimizers (SGD, Adam) and learning-rate schedules.

``opt.step(params, grads)`` takes two dicts keyed by stable parameter names
(e.g. "3/weight"; lists of (name, array) pairs work too) and updates every
parameter array in place: the arrays are never replaced, so layers keep their
references. Per-parameter state (momentum buffers, Adam moments) is allocated on
a parameter's first step with its dtype (float32 stays float32) and then updated
in place.

The update rules are those of torch.optim.SGD and torch.optim.Adam (L2 weight
decay added to the gradient). ``opt.lr`` is the learning rate of the current
epoch: ``opt.set_epoch(e)`` sets it from ``opt.base_lr`` and the schedule
(StepLR, CosineLR, LambdaLR).

``state_dict()`` is a flat dict of plain numbers and ndarray copies
("step", "epoch", "lr", and "<slot>/<parameter name>" such as
"exp_avg/3/weight"); ``load_state_dict`` restores it, so training continues
exactly as if it had not stopped.
"""
import math

import numpy as np

from ._checks import check_config, check_int, check_number
from ._config import Configurable

__all__ = ["Optimizer", "SGD", "Adam", "Schedule", "StepLR", "CosineLR", "LambdaLR",
           "OPTIMIZERS", "SCHEDULES", "get_optimizer"]


def _scalar(value):
    """A plain Python number from a number, NumPy scalar or 0-d array (others unchanged)."""
    return value.item() if isinstance(value, (np.ndarray, np.generic)) and np.ndim(value) == 0 \
        else value


# ----------------------------------------------------------------------------------------
# Learning-rate schedules: lr(epoch) from the optimizer's base_lr.

class Schedule(Configurable):
    """Maps (base_lr, epoch) -> the learning rate of that epoch (epochs count from 0)."""

    def lr_at(self, base_lr, epoch):
        raise NotImplementedError


class StepLR(Schedule):
    """lr = base_lr * gamma ** (epoch // step_size) (torch.optim.lr_scheduler.StepLR)."""

    def __init__(self, step_size, gamma=0.1):
        self.step_size = check_int(step_size, "step_size", low=1)
        self.gamma = check_number(gamma, "gamma", 0.0)

    def lr_at(self, base_lr, epoch):
        return base_lr * self.gamma ** (epoch // self.step_size)

    def get_config(self):
        return {"step_size": self.step_size, "gamma": self.gamma}


class CosineLR(Schedule):
    """lr = eta_min + (base_lr - eta_min) (1 + cos(pi e / T_max)) / 2 with e = epoch - start,
    clipped to [0, T_max]: base_lr until epoch start, then eta_min after T_max epochs.

    The closed form of torch's CosineAnnealingLR over its first half period; after
    T_max epochs it stays at eta_min instead of rising again. start > 0 begins a new
    cycle later in a run (a warm restart, Loshchilov & Hutter's SGDR).
    """

    def __init__(self, T_max, eta_min=0.0, start=0):
        self.T_max = check_int(T_max, "T_max", low=1)
        self.eta_min = check_number(eta_min, "eta_min", 0.0)
        self.start = check_int(start, "start", low=0)

    def lr_at(self, base_lr, epoch):
        e = min(max(epoch - self.start, 0), self.T_max)
        return self.eta_min + (base_lr - self.eta_min) * (1 + math.cos(math.pi * e / self.T_max)) / 2

    def get_config(self):
        return {"T_max": self.T_max, "eta_min": self.eta_min, "start": self.start}


class LambdaLR(Schedule):
    """lr = base_lr * fn(epoch) for a function fn: epoch -> factor (torch's LambdaLR).

    A function cannot be stored in a JSON config: get_config() names it, and
    from_config() raises ValueError (pass the schedule again when loading).
    """

    def __init__(self, fn):
        if not callable(fn):
            raise TypeError(f"fn: expected a function epoch -> factor, got {type(fn).__name__}")
        self.fn = fn

    def lr_at(self, base_lr, epoch):
        factor = self.fn(epoch)
        return base_lr * check_number(factor, f"LambdaLR fn({epoch})", 0.0)

    def get_config(self):
        return {"fn": getattr(self.fn, "__qualname__", repr(self.fn))}

    @classmethod
    def from_config(cls, config):
        raise ValueError(f"LambdaLR: the function {config.get('fn')!r} cannot be rebuilt from a "
                         f"config; pass schedule=LambdaLR(fn) again")

    def __repr__(self):
        return f"LambdaLR(fn={self.get_config()['fn']})"


SCHEDULES = {cls.__name__: cls for cls in (StepLR, CosineLR, LambdaLR)}


# ----------------------------------------------------------------------------------------
# Optimizers

def _pairs(items, name):
    """A dict or a list of (key, value) pairs -> list of (str key, value)."""
    try:
        pairs = list(items.items()) if isinstance(items, dict) else list(items)
    except TypeError:
        raise TypeError(f"{name}: expected a dict or (name, array) pairs, "
                        f"got {type(items).__name__}") from None
    for pair in pairs:
        if not (isinstance(pair, tuple) and len(pair) == 2):
            raise TypeError(f"{name}: expected a dict or (name, array) pairs, got {pair!r:.80}")
    return pairs


class Optimizer(Configurable):
    """Base class. Subclasses define ``_slots`` (names of their per-parameter state
    arrays) and ``_update(key, p, g, scratch)`` (one in-place step of one parameter,
    whose state ``self.state[key]`` is absent before its first step).

    lr: the base learning rate; schedule: None or a Schedule, applied by set_epoch.
    """
    _slots = ()

    def __init__(self, lr, weight_decay=0.0, schedule=None):
        self.base_lr = check_number(lr, "lr", 0.0)
        self.weight_decay = check_number(weight_decay, "weight_decay", 0.0)
        if schedule is not None and not isinstance(schedule, Schedule):
            raise TypeError(f"schedule: expected a Schedule (StepLR, CosineLR, LambdaLR) or None, "
                            f"got {type(schedule).__name__}")
        self.schedule = schedule
        self.step_count = 0      # steps taken (Adam's bias correction uses it)
        self.state = {}          # parameter name -> {slot: ndarray}
        self._scratch = {}       # parameter name -> work array (not part of the state)
        self.set_epoch(0)

    # -- learning rate --------------------------------------------------------------
    def set_epoch(self, epoch):
        """Set the current epoch; lr becomes the schedule's value (base_lr without one)."""
        self.epoch = check_int(epoch, "epoch", low=0)
        self._lr = self.base_lr if self.schedule is None else \
            float(self.schedule.lr_at(self.base_lr, self.epoch))
        return self._lr

    @property
    def lr(self):
        """The learning rate of the current epoch. Without a schedule it can be assigned
        (that sets base_lr too); with one, change base_lr or the schedule instead."""
        return self._lr

    @lr.setter
    def lr(self, value):
        if self.schedule is not None:
            raise AttributeError(f"lr: set by the schedule {self.schedule!r} at each epoch; "
                                 f"assign base_lr (or a new schedule) instead")
        self.base_lr = self._lr = check_number(value, "lr", 0.0)

    # -- the step -------------------------------------------------------------------
    def step(self, params, grads):
        """One update of every parameter, in place.

        params: dict (or pairs) name -> float32/float64 ndarray, updated in place;
        grads: name -> gradient of the same shape (extra names are an error).
        """
        params = _pairs(params, "params")
        grads = dict(_pairs(grads, "grads"))
        extra = set(grads) - {key for key, _ in params}
        if extra:
            raise ValueError(f"grads: names without a parameter: {sorted(extra)}")
        checked = []
        for key, p in params:
            if not isinstance(p, np.ndarray) or p.dtype not in (np.float32, np.float64):
                raise TypeError(f"params[{key!r}]: expected a float32/float64 ndarray, got "
                                f"{getattr(p, 'dtype', type(p).__name__)}")
            if not p.flags.writeable:
                raise ValueError(f"params[{key!r}]: the array is read-only; the update is in place")
            if key not in grads:
                raise ValueError(f"grads: no gradient for parameter {key!r}")
            g = np.asarray(grads[key])
            if g.shape != p.shape:
                raise ValueError(f"grads[{key!r}]: shape {g.shape} does not match the parameter's "
                                 f"{p.shape}")
            if g.dtype.kind != "f":
                raise TypeError(f"grads[{key!r}]: expected a float array, got dtype {g.dtype}")
            state = self.state.get(key)
            if state is not None and any(a.shape != p.shape for a in state.values()):
                raise ValueError(f"params[{key!r}]: shape {p.shape} differs from the optimizer "
                                 f"state's {next(iter(state.values())).shape}")
            checked.append((key, p, g))
        self.step_count += 1
        for key, p, g in checked:
            self._update(key, p, g, self._scratch_for(key, p))

    def _scratch_for(self, key, p):
        work = self._scratch.get(key)
        if work is None or work.shape != p.shape or work.dtype != p.dtype:
            work = self._scratch[key] = np.empty_like(p, order="C")
        return work

    def _decayed(self, p, g, scratch):
        """g + weight_decay * p (torch's L2 weight decay, added to the gradient), in scratch;
        without weight decay g itself, which must then only be read."""
        if not self.weight_decay:
            return g
        np.multiply(p, self.weight_decay, out=scratch)
        scratch += g
        return scratch

    def _update(self, key, p, g, scratch):
        raise NotImplementedError

    # -- configs and state ----------------------------------------------------------
    def _hyper(self):
        """The constructor's keyword arguments other than lr and schedule."""
        return {"weight_decay": self.weight_decay}

    def get_config(self):
        """JSON-able constructor arguments; the schedule as {"type": ..., "config": ...}."""
        schedule = None if self.schedule is None else {
            "type": type(self.schedule).__name__, "config": self.schedule.get_config()}
        return {"lr": self.base_lr, **self._hyper(), "schedule": schedule}

    @classmethod
    def from_config(cls, config, schedule=None):
        """Rebuild from get_config(); ``schedule`` overrides the stored one (needed for LambdaLR)."""
        config = dict(config)
        stored = config.pop("schedule", None)
        if schedule is None and stored is not None:
            kind = stored.get("type") if isinstance(stored, dict) else None
            if kind not in SCHEDULES:
                raise ValueError(f"schedule: unknown type {kind!r}; known: {sorted(SCHEDULES)}")
            schedule = SCHEDULES[kind].from_config(stored.get("config") or {})
        try:
            return cls(**check_config(cls, config), schedule=schedule)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{cls.__name__}: bad config {config!r} ({exc})") from None

    def state_dict(self):
        """Flat dict: "step", "epoch", "lr" (plain numbers) and "<slot>/<name>" -> ndarray copies."""
        out = {"step": self.step_count, "epoch": self.epoch, "lr": self.lr}
        for key, state in self.state.items():
            for slot, array in state.items():
                out[f"{slot}/{key}"] = array.copy()
        return out

    def load_state_dict(self, state_dict):
        """Restore a state_dict() (copies the arrays). Unknown keys are a ValueError."""
        d = dict(state_dict)
        missing = {"step", "epoch", "lr"} - set(d)
        if missing:
            raise ValueError(f"state_dict: missing entries {sorted(missing)}")
        state = {}
        for name, value in d.items():
            if name in ("step", "epoch", "lr"):
                continue
            slot, _, key = name.partition("/")
            if slot not in self._slots or not key:
                raise ValueError(f"state_dict: unknown entry {name!r} for {type(self).__name__} "
                                 f"(slots: {list(self._slots)})")
            array = np.asarray(value)
            if array.dtype not in (np.float32, np.float64):
                raise ValueError(f"state_dict: {name!r} has dtype {array.dtype}, expected float")
            state.setdefault(key, {})[slot] = np.array(array, order="C", copy=True)
        for key, slots in state.items():
            if set(slots) != set(self._slots) or len({a.shape for a in slots.values()}) != 1:
                raise ValueError(f"state_dict: parameter {key!r} needs slots {list(self._slots)} "
                                 f"of one shape, got {sorted(slots)}")
        # Numbers may come back from a file as NumPy scalars or 0-d arrays.
        step = check_int(_scalar(d["step"]), "state_dict step", low=0)
        epoch = check_int(_scalar(d["epoch"]), "state_dict epoch", low=0)
        lr = check_number(_scalar(d["lr"]), "state_dict lr", 0.0)
        self.state, self._scratch = state, {}
        self.step_count, self.epoch, self._lr = step, epoch, lr
        if self.schedule is None:
            self.base_lr = lr  # without a schedule the current rate is the base rate

    def __repr__(self):
        args = [f"{k}={v!r}" for k, v in self.get_config().items() if k != "schedule"]
        if self.schedule is not None:
            args.append(f"schedule={self.schedule!r}")
        return f"{type(self).__name__}({', '.join(args)})"


class SGD(Optimizer):
    """Stochastic gradient descent with momentum, as torch.optim.SGD:

        g = grad + weight_decay * p
        b = g on the first step, else b = momentum * b + (1 - dampening) * g
        g = g + momentum * b (nesterov) or g = b (momentum > 0)
        p = p - lr * g
    """
    _slots = ("momentum_buffer",)

    def __init__(self, lr=0.01, momentum=0.0, nesterov=False, weight_decay=0.0, dampening=0.0,
                 schedule=None):
        self.momentum = check_number(momentum, "momentum", 0.0)
        self.dampening = check_number(dampening, "dampening", 0.0, high=1.0)
        if not isinstance(nesterov, (bool, np.bool_)):
            raise TypeError(f"nesterov: expected True or False, got {nesterov!r}")
        if nesterov and (self.momentum == 0 or self.dampening != 0):
            raise ValueError(f"nesterov: needs momentum > 0 and dampening = 0 "
                             f"(got momentum={momentum}, dampening={dampening})")
        self.nesterov = bool(nesterov)
        super().__init__(lr, weight_decay, schedule)

    def _hyper(self):
        return {"momentum": self.momentum, "nesterov": self.nesterov,
                "weight_decay": self.weight_decay, "dampening": self.dampening}

    def _update(self, key, p, g, scratch):
        d = self._decayed(p, g, scratch)
        if self.momentum:
            state = self.state.get(key)
            if state is None:
                # torch starts the buffer at the first gradient (no dampening on step 1).
                buf = np.array(d, dtype=p.dtype, order="C")
                self.state[key] = {"momentum_buffer": buf}
            else:
                buf = state["momentum_buffer"]
                buf *= self.momentum
                if self.dampening:
                    np.multiply(d, 1 - self.dampening, out=scratch)  # nesterov excludes dampening:
                    buf += scratch                                    # d is not needed again
                else:
                    buf += d
            if self.nesterov:  # d + momentum * buf
                if d is scratch:
                    scratch += self.momentum * buf
                else:
                    np.multiply(buf, self.momentum, out=scratch)
                    scratch += d
                d = scratch
            else:
                d = buf
        np.multiply(d, self.lr, out=scratch)
        p -= scratch


class Adam(Optimizer):
    """Adam with bias correction, as torch.optim.Adam (amsgrad=False):

        g = grad + weight_decay * p
        m = beta1 m + (1 - beta1) g;   v = beta2 v + (1 - beta2) g^2
        p = p - lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
    """
    _slots = ("exp_avg", "exp_avg_sq")

    def __init__(self, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, schedule=None):
        try:
            b1, b2 = betas
        except (TypeError, ValueError):
            raise ValueError(f"betas: expected a pair (beta1, beta2), got {betas!r}") from None
        self.betas = (check_number(b1, "betas[0]", 0.0, high=1.0, high_open=True),
                      check_number(b2, "betas[1]", 0.0, high=1.0, high_open=True))
        self.eps = check_number(eps, "eps", 0.0)
        super().__init__(lr, weight_decay, schedule)

    def _hyper(self):
        return {"betas": list(self.betas), "eps": self.eps, "weight_decay": self.weight_decay}

    def _update(self, key, p, g, scratch):
        b1, b2 = self.betas
        t = self.step_count
        state = self.state.get(key)
        if state is None:
            state = self.state[key] = {slot: np.zeros_like(p, order="C") for slot in self._slots}
        m, v = state["exp_avg"], state["exp_avg_sq"]
        d = self._decayed(p, g, scratch)
        m *= b1
        m += (1 - b1) * d
        np.square(d, out=scratch)  # from here on scratch is free for work
        scratch *= 1 - b2
        v *= b2
        v += scratch
        # denominator sqrt(v) / sqrt(1 - b2^t) + eps, then p -= lr/(1 - b1^t) * m / denominator
        np.sqrt(v, out=scratch)
        scratch /= math.sqrt(1 - b2 ** t)
        scratch += self.eps
        np.divide(m, scratch, out=scratch)
        scratch *= self.lr / (1 - b1 ** t)
        p -= scratch


OPTIMIZERS = {cls.__name__: cls for cls in (SGD, Adam)}


def get_optimizer(optimizer, **kwargs):
    """An optimizer from a name ("sgd", "adam", any case) with kwargs, a class, or an
    optimizer object (returned as is)."""
    if isinstance(optimizer, str):
        cls = {k.lower(): v for k, v in OPTIMIZERS.items()}.get(optimizer.lower())
        if cls is None:
            raise ValueError(f"optimizer: unknown name {optimizer!r}; choose from {sorted(OPTIMIZERS)}")
        return cls(**kwargs)
    if isinstance(optimizer, type) and issubclass(optimizer, Optimizer):
        return optimizer(**kwargs)
    if kwargs:
        raise TypeError("get_optimizer: keyword arguments only go with a name or a class")
    if isinstance(optimizer, Optimizer) or hasattr(optimizer, "step"):
        return optimizer
    raise TypeError(f"optimizer: expected a name, an Optimizer class or object, "
                    f"got {type(optimizer).__name__}")
