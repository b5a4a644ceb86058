"""Model files: round trip, every kind of damage gives ModelFormatError, atomic save."""
import json
import os

import h5py
import numpy as np
import pytest

import im2colnet as inet
from im2colnet import serialization
from im2colnet import ModelFormatError, load_model


def small_model(dtype=np.float32):
    model = inet.Sequential([inet.Conv2d(1, 3, 3, padding=1), inet.BatchNorm2d(3), inet.ReLU(),
                             inet.MaxPool2d(2), inet.Flatten(), inet.Dropout(0.25), inet.Linear(48, 4)],
                            input_shape=(1, 8, 8), name="small")
    return model.astype(dtype).reset_parameters(1)


@pytest.fixture
def saved(tmp_path):
    model = small_model()
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((32, 1, 8, 8)), rng.integers(0, 4, 32)
    model.fit(x, y, epochs=1, batch_size=8, verbose=0, seed=0)   # running statistics move
    path = tmp_path / "model.h5"
    model.save(path, metadata={"dataset": "noise", "test_accuracy": 0.25})
    return model, path, x


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_round_trip_gives_identical_predictions(tmp_path, dtype):
    model = small_model(dtype)
    path = model.save(tmp_path / "m.h5", metadata={"dataset": "none"})
    loaded = load_model(path)
    x = np.random.default_rng(1).standard_normal((5, 1, 8, 8))
    assert np.array_equal(loaded.predict(x), model.predict(x))
    assert loaded.get_config() == model.get_config() and loaded.dtype == dtype
    assert loaded.metadata["dataset"] == "none" and loaded.metadata["format_version"] == 1
    assert "date" in loaded.metadata and loaded.metadata["library_version"] == inet.__version__


def test_file_is_readable_with_plain_h5py(saved):
    model, path, _ = saved
    with h5py.File(path, "r") as f:
        assert f.attrs["format"] == "im2colnet-model" and f.attrs["format_version"] == 1
        arch = json.loads(f.attrs["architecture"])
        assert [layer["type"] for layer in arch["layers"]][:3] == ["Conv2d", "BatchNorm2d", "ReLU"]
        assert np.array_equal(f["weights/0/weight"][()], model.layers[0].params["weight"])
        assert np.array_equal(f["weights/1/running_var"][()], model.layers[1].buffers["running_var"])
        assert json.loads(f.attrs["metadata"])["test_accuracy"] == 0.25


def _edit(path, action):
    with h5py.File(path, "r+") as f:
        action(f)


def _set_attr(name, value):
    return lambda f: f.attrs.__setitem__(name, value)


def _arch_edit(change):
    def action(f):
        arch = json.loads(f.attrs["architecture"])
        change(arch)
        f.attrs["architecture"] = json.dumps(arch)
    return action


DAMAGE = {
    "truncated": (lambda p: p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2]), "HDF5|damaged"),
    "random bytes": (lambda p: p.write_bytes(np.random.default_rng(0).bytes(4096)), "not a readable HDF5"),
    "empty file": (lambda p: p.write_bytes(b""), "not a readable HDF5"),
    "not a model": (lambda p: _edit(p, lambda f: f.attrs.__delitem__("format")), "not an im2colnet model"),
    "newer version": (lambda p: _edit(p, _set_attr("format_version", 2)), "newer than this library"),
    "malformed json": (lambda p: _edit(p, _set_attr("architecture", "{'layers': [")), "malformed"),
    "unknown layer": (lambda p: _edit(p, _arch_edit(lambda a: a["layers"][2].__setitem__("type", "Evil"))),
                      "unknown type 'Evil'"),
    "unknown option": (lambda p: _edit(p, _arch_edit(lambda a: a["layers"][0]["config"].__setitem__("fast", 1))),
                       "fast"),
    "missing dataset": (lambda p: _edit(p, lambda f: f.__delitem__("weights/6/bias")), "missing weight datasets"),
    "extra dataset": (lambda p: _edit(p, lambda f: f.create_dataset("weights/2/weight", data=np.ones(3))),
                      "unexpected datasets"),
    "wrong shape": (lambda p: _edit(p, lambda f: (f.__delitem__("weights/6/bias"),
                                                  f.create_dataset("weights/6/bias", data=np.ones(5, np.float32)))),
                    "shape"),
    "wrong dtype": (lambda p: _edit(p, lambda f: (f.__delitem__("weights/6/bias"),
                                                  f.create_dataset("weights/6/bias", data=np.ones(4)))),
                    "dtype"),
    "changed weight": (lambda p: _edit(p, lambda f: f["weights/0/weight"].__setitem__((0, 0, 0, 0), 9.0)),
                       "checksum"),
    "missing metadata": (lambda p: _edit(p, lambda f: f.attrs.__delitem__("metadata")), "metadata"),
}


@pytest.mark.parametrize("kind", sorted(DAMAGE))
def test_damaged_files_raise_model_format_error(saved, kind):
    _, path, _ = saved
    damage, words = DAMAGE[kind]
    damage(path)
    with pytest.raises(ModelFormatError) as info:
        load_model(path)
    message = str(info.value)
    assert str(path) in message
    assert any(word in message for word in words.split("|")), message


def test_saved_file_has_the_usual_permissions(tmp_path):
    umask = os.umask(0o022)
    try:
        path = small_model().save(tmp_path / "perm.h5")
    finally:
        os.umask(umask)
    assert os.stat(path).st_mode & 0o777 == 0o644


def test_missing_file_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.h5"):
        load_model(tmp_path / "nope.h5")


def test_interrupted_save_keeps_the_old_file(saved, monkeypatch):
    model, path, x = saved
    before = path.read_bytes()
    model.layers[0].params["weight"] += 1

    def broken(*args, **kwargs):
        raise OSError("disk full")   # a failure in the middle of writing the file

    monkeypatch.setattr(serialization, "_write_optimizer", broken)
    with pytest.raises(OSError, match="disk full"):
        model.save(path, optimizer=inet.optim.SGD(0.1))
    assert path.read_bytes() == before
    assert os.listdir(path.parent) == [path.name]   # no temporary file left behind
    load_model(path)


def test_optimizer_state_round_trip(saved, tmp_path):
    model, _, x = saved
    opt = inet.optim.Adam(0.01)
    y = np.zeros(len(x), dtype=np.int64)
    model.fit(x, y, epochs=1, batch_size=8, optimizer=opt, verbose=0, seed=0)
    path = model.save(tmp_path / "with_opt.h5", optimizer=opt)
    loaded, loaded_opt = load_model(path, with_optimizer=True)
    assert type(loaded_opt) is inet.optim.Adam and loaded_opt.get_config() == opt.get_config()
    state, back = opt.state_dict(), loaded_opt.state_dict()
    assert set(state) == set(back)
    for key in state:
        assert np.array_equal(state[key], back[key])
    assert load_model(tmp_path / "with_opt.h5", with_optimizer=False).get_config() == model.get_config()
    _, none = load_model(saved[1], with_optimizer=True)
    assert none is None


def test_saving_an_unbuilt_model_or_bad_metadata_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="build"):
        inet.Sequential([inet.Linear(2, 2)]).save(tmp_path / "x.h5")
    with pytest.raises(TypeError, match="metadata"):
        small_model().save(tmp_path / "x.h5", metadata={"bad": object()})
    assert not os.listdir(tmp_path)
