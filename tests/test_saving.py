"""save/load: exact round trips, atomic writes, no pickle, clear errors for damaged files."""
import json
import os
import zipfile

import numpy as np
import pytest

import fastgru

I, H = 3, 4

MODULES = [
    lambda: fastgru.GRU(I, H, num_layers=2, bidirectional=True, batch_first=True, seed=0),
    lambda: fastgru.GRU(I, H, reset_after=False, bias=False, dtype="float64", seed=1),
    lambda: fastgru.LSTM(I, H, num_layers=2, proj_size=2, dropout=0.25, seed=2),
    lambda: fastgru.GRUCell(I, H, dtype="float64", seed=3),
    lambda: fastgru.LSTMCell(I, H, bias=False, seed=4),
]


@pytest.mark.parametrize("make", MODULES)
def test_round_trip(tmp_path, make):
    m = make()
    path = tmp_path / "model.npz"
    m.save(path)
    assert os.listdir(tmp_path) == ["model.npz"]  # no temp file left behind
    back = fastgru.load(path)
    assert type(back) is type(m) and repr(back) == repr(m)
    assert back.get_config() == m.get_config() and back.dtype == m.dtype
    for k, v in m.parameters().items():
        assert np.array_equal(back.parameters()[k], v) and back.parameters()[k].dtype == v.dtype
    x = np.random.default_rng(0).standard_normal((5, 2, I)).astype(m.dtype)
    if isinstance(m, (fastgru.GRU, fastgru.LSTM)):
        m.eval(), back.eval()
        if m.batch_first:
            x = x.transpose(1, 0, 2)
        assert np.array_equal(back(x)[0], m(x)[0])
    else:
        out, out_b = m(x[0]), back(x[0])
        out, out_b = (out, out_b) if isinstance(out, np.ndarray) else (out[0], out_b[0])
        assert np.array_equal(out, out_b)
    # the file is plain arrays: readable without pickle
    with np.load(path, allow_pickle=False) as z:
        assert set(z.files) == set(m.parameters()) | {"__fastgru__"}


def test_overwrite_keeps_file_whole(tmp_path):
    path = tmp_path / "m.npz"
    fastgru.GRU(I, H, seed=0).save(path)
    m2 = fastgru.GRU(I, H, seed=1)
    m2.save(str(path))
    assert np.array_equal(fastgru.load(path).flat_parameters(), m2.flat_parameters())
    assert os.listdir(tmp_path) == ["m.npz"]


def test_failed_write_leaves_no_temp_file(tmp_path, monkeypatch):
    path = tmp_path / "m.npz"
    fastgru.GRU(I, H, seed=0).save(path)
    before = path.read_bytes()

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", boom)
    with pytest.raises(OSError, match="disk full"):
        fastgru.GRU(I, H, seed=1).save(path)
    assert os.listdir(tmp_path) == ["m.npz"] and path.read_bytes() == before


def _rewrite(src, dst, change):
    """Copy an .npz, letting change(name, data) alter or drop members (None drops)."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for item in zin.infolist():
            data = change(item.filename, zin.read(item.filename))
            if data is not None:
                zout.writestr(item, data)


def _npy(a):
    import io

    buf = io.BytesIO()
    np.save(buf, a, allow_pickle=True)
    return buf.getvalue()


def test_truncated_and_garbage_files(tmp_path):
    path = tmp_path / "m.npz"
    fastgru.LSTM(I, H, num_layers=2).save(path)
    data = path.read_bytes()
    for cut in (10, len(data) // 2, len(data) - 30):
        bad = tmp_path / f"cut{cut}.npz"
        bad.write_bytes(data[:cut])
        with pytest.raises(ValueError, match="truncated|corrupt|cannot load"):
            fastgru.load(bad)
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"not a model at all")
    with pytest.raises(ValueError, match="cannot load"):
        fastgru.load(junk)
    plain = tmp_path / "plain.npz"
    np.savez(plain, a=np.zeros(3))
    with pytest.raises(ValueError, match="fastgru"):
        fastgru.load(plain)
    with pytest.raises(FileNotFoundError):
        fastgru.load(tmp_path / "missing.npz")


def test_tampered_files(tmp_path):
    path = tmp_path / "m.npz"
    m = fastgru.GRU(I, H, num_layers=2, seed=0)
    m.save(path)
    header = json.loads(str(np.load(path)["__fastgru__"][()]))

    def check(change, word):
        bad = tmp_path / "bad.npz"
        _rewrite(path, bad, change)
        with pytest.raises(ValueError, match=word):
            fastgru.load(bad)

    # a weight with other values (valid zip, valid npy): the checksum catches it
    w = m.parameters()["weight_hh_l1"].copy()
    w[0, 0] += 1
    check(lambda n, d: _npy(w) if n == "weight_hh_l1.npy" else d, "checksum")
    # wrong shape, wrong dtype, missing parameter, extra parameter
    check(lambda n, d: _npy(w[:, :-1]) if n == "weight_hh_l1.npy" else d, "weight_hh_l1")
    check(lambda n, d: _npy(w.astype(np.float64)) if n == "weight_hh_l1.npy" else d, "dtype")
    check(lambda n, d: None if n == "bias_hh_l0.npy" else d, "bias_hh_l0")
    # a pickled object array is refused (allow_pickle=False)
    check(lambda n, d: _npy(np.array([object()], dtype=object)) if n == "bias_hh_l0.npy" else d,
          "pickle|cannot load")
    # config changes: hidden size, class, dtype, version, broken JSON
    for key, value, word in (("config", dict(header["config"], hidden_size=7), "hidden_size|match"),
                             ("class", "Transformer", "Transformer"),
                             ("config", dict(header["config"], num_layers=-1), "num_layers"),
                             ("version", 99, "version"),
                             ("config", dict(header["config"], dtype="float64"), "dtype")):
        h = dict(header, **{key: value})
        check(lambda n, d, h=h: _npy(np.array(json.dumps(h))) if n == "__fastgru__.npy" else d,
              word)
    check(lambda n, d: _npy(np.array("{not json")) if n == "__fastgru__.npy" else d,
          "cannot load")
    # a config edit that keeps every shape: the checksum covers the header too
    for edit in (dict(reset_after=False), dict(batch_first=True), dict(dropout=0.3),
                 dict(reverse=True)):
        h = dict(header, config=dict(header["config"], **edit))
        check(lambda n, d, h=h: _npy(np.array(json.dumps(h))) if n == "__fastgru__.npy" else d,
              "checksum")


def test_version_1_files_still_load(tmp_path):
    # version 1 digested the arrays only: such a file (rewritten here) loads unchanged
    from fastgru.saving import _digest

    path, old = tmp_path / "m.npz", tmp_path / "v1.npz"
    m = fastgru.LSTM(I, H, seed=1)
    m.save(path)
    header = json.loads(str(np.load(path)["__fastgru__"][()]))
    h1 = dict(header, version=1, sha256=_digest(m.state_dict()))
    _rewrite(path, old, lambda n, d: _npy(np.array(json.dumps(h1))) if n == "__fastgru__.npy"
             else d)
    back = fastgru.load(old)
    assert np.array_equal(back.flat_parameters(), m.flat_parameters())


def test_bytes_and_pathlike_paths(tmp_path):
    m = fastgru.GRU(I, H, seed=2)
    for p in (str(tmp_path / "s.npz"), tmp_path / "p.npz", os.fsencode(tmp_path / "b.npz")):
        m.save(p)
        assert np.array_equal(fastgru.load(p).flat_parameters(), m.flat_parameters())


def test_tampered_sizes_fail_before_allocating(tmp_path):
    """A header whose config describes far more parameters than the file holds is refused before
    the module is built (num_layers = 10**7 used to allocate until the OOM killer stepped in)."""
    path = tmp_path / "m.npz"
    fastgru.LSTM(I, H, seed=0).save(path)
    header = json.loads(str(np.load(path)["__fastgru__"][()]))
    for key, value in (("num_layers", 10**7), ("hidden_size", 10**6), ("input_size", 10**9)):
        h = dict(header, config=dict(header["config"], **{key: value}))
        bad = tmp_path / "bad.npz"
        _rewrite(path, bad, lambda n, d, h=h: _npy(np.array(json.dumps(h)))
                 if n == "__fastgru__.npy" else d)
        with pytest.raises(ValueError, match="config describes"):
            fastgru.load(bad)


def test_member_that_is_not_npy(tmp_path):
    """A parameter stored without the .npy suffix loads as raw bytes: a ValueError, not an
    AttributeError."""
    path = tmp_path / "m.npz"
    fastgru.GRU(I, H, seed=0).save(path)
    with zipfile.ZipFile(path) as z:
        members = {n: z.read(n) for n in z.namelist()}
    members["weight_ih_l0"] = b"not an npy array"
    del members["weight_ih_l0.npy"]
    bad = tmp_path / "bad.npz"
    with zipfile.ZipFile(bad, "w") as z:
        for n, d in members.items():
            z.writestr(n, d)
    with pytest.raises(ValueError, match="not a .npy array"):
        fastgru.load(bad)


@pytest.mark.parametrize("make", MODULES)
def test_config_size_matches_module(make):
    from fastgru.saving import _config_size

    m = make()
    assert _config_size(type(m).__name__, m.get_config()) == m.num_parameters


def test_save_into_missing_directory_names_the_path(tmp_path):
    target = tmp_path / "nope" / "m.npz"
    with pytest.raises(FileNotFoundError, match="nope"):
        fastgru.GRU(I, H, seed=0).save(target)
    assert not (tmp_path / "nope").exists()


def test_text_file_error_does_not_advise_unpickling(tmp_path):
    path = tmp_path / "notes.npz"
    path.write_text("hello\n")
    with pytest.raises(ValueError, match="not an .npz archive of plain arrays") as e:
        fastgru.load(path)
    assert "allow_pickle" not in str(e.value)
    with pytest.raises(fastgru.CheckpointError, match="not an .npz archive") as e:
        fastgru.load_model(path)
    assert "allow_pickle" not in str(e.value)


def test_a_small_file_inflating_to_gigabytes_is_refused_before_decompressing(tmp_path):
    """A deflated member declaring 64 MiB in a file of ~70 KB: refused from the zip directory
    (decompressing first took gigabytes for a 1.5 MB file)."""
    good = tmp_path / "m.npz"
    fastgru.GRU(I, H, seed=0).save(good)
    fastgru.TextClassifier(10, embed_dim=2, hidden_size=2, seed=0).save(tmp_path / "c.npz")
    for src in (good, tmp_path / "c.npz"):
        bomb = tmp_path / f"bomb_{src.name}"
        with zipfile.ZipFile(src) as z, zipfile.ZipFile(bomb, "w") as out:
            for n in z.namelist():
                out.writestr(n, z.read(n))
            out.writestr("extra.npy", bytes(64 << 20), compress_type=zipfile.ZIP_DEFLATED)
        assert bomb.stat().st_size < 200_000
        with pytest.raises(ValueError, match="declare .* far more"):
            fastgru.load(bomb)
        with pytest.raises(fastgru.CheckpointError, match="declare .* far more"):
            fastgru.load_model(bomb)


def test_overwriting_keeps_permissions_and_follows_symlinks(tmp_path):
    m = fastgru.GRU(I, H, seed=0)
    path = tmp_path / "m.npz"
    m.save(path)
    os.chmod(path, 0o600)
    m.save(path)
    assert path.stat().st_mode & 0o777 == 0o600
    link = tmp_path / "link.npz"
    link.symlink_to(path)
    m2 = fastgru.GRU(I, H, seed=1)
    m2.save(link)
    assert link.is_symlink()
    assert np.array_equal(fastgru.load(path).flat_parameters(), m2.flat_parameters())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.npz", "m.npz"]


def test_errors_name_the_users_path_and_the_right_loader(tmp_path, monkeypatch):
    m = fastgru.GRU(I, H, seed=0)
    with pytest.raises(IsADirectoryError, match="is a directory") as e:
        m.save(tmp_path)
    assert e.value.filename == str(tmp_path)
    with pytest.raises(fastgru.CheckpointError, match="is a directory"):
        fastgru.load_model(tmp_path)
    def refuse(path, *args, **kw):  # creating the temporary file beside the target
        raise PermissionError(13, "Permission denied", path)

    monkeypatch.setattr(os, "open", refuse)
    with pytest.raises(PermissionError, match="cannot write in") as e:
        m.save(tmp_path / "m.npz")
    assert e.value.filename == str(tmp_path / "m.npz")
    monkeypatch.undo()
    m.save(tmp_path / "layer.npz")
    fastgru.TextClassifier(10, embed_dim=2, hidden_size=2, seed=0).save(tmp_path / "model.npz")
    with pytest.raises(ValueError, match="fastgru.load_model"):
        fastgru.load(tmp_path / "model.npz")
    with pytest.raises(fastgru.CheckpointError, match=r"fastgru.load\(\)"):
        fastgru.load_model(tmp_path / "layer.npz")


def test_saving_leaves_the_process_umask_alone(tmp_path, monkeypatch):
    """A new file gets 0666 less the umask from the kernel: save() once read the umask with
    os.umask(0), which for a moment made other threads' new files world-writable."""
    calls = []
    real = os.umask
    monkeypatch.setattr(os, "umask", lambda m: calls.append(m) or real(m))
    old = real(0o027)
    try:
        fastgru.GRUCell(2, 2, seed=0).save(tmp_path / "c.npz")
    finally:
        real(old)
    assert calls == []
    assert (tmp_path / "c.npz").stat().st_mode & 0o777 == 0o640
    assert [p.name for p in tmp_path.iterdir()] == ["c.npz"]  # no temporary file left


def test_deeply_nested_metadata_is_a_checkpoint_error(tmp_path):
    from fastgru.checkpoint import save_arrays

    path = tmp_path / "deep.npz"
    save_arrays(str(path), {}, {"x": 1})
    deep = ("[" * 100_000 + "]" * 100_000).encode()
    _rewrite(path, tmp_path / "bad.npz",
             lambda n, d: _npy(np.frombuffer(deep, np.uint8)) if n == "__meta__.json.npy" else d)
    with pytest.raises(fastgru.CheckpointError, match="corrupt metadata"):
        fastgru.load_model(tmp_path / "bad.npz")


def test_dropout_masks_after_load_and_copy(tmp_path):
    """A loaded layer draws the masks a fresh layer of its seed draws (the seed is in its
    config); deepcopy and pickle carry the generator's position: copy and original draw the
    same masks next."""
    import copy
    import pickle

    x = np.random.default_rng(0).standard_normal((5, 2, I))

    def make():
        return fastgru.GRU(I, H, num_layers=2, dropout=0.5, dtype="float64", seed=7)

    m = make()
    first = m(x)[0]  # the generator has moved on
    assert m.get_config()["seed"] == 7 and "seed" not in fastgru.GRU(I, H).get_config()
    m.save(tmp_path / "m.npz")
    a, b = fastgru.load(tmp_path / "m.npz"), fastgru.load(tmp_path / "m.npz")
    np.testing.assert_array_equal(a(x)[0], first)
    np.testing.assert_array_equal(b(x)[0], first)
    c1, c2 = copy.deepcopy(m), pickle.loads(pickle.dumps(m))
    y = m(x)[0]
    assert not np.array_equal(y, first)
    np.testing.assert_array_equal(c1(x)[0], y)
    np.testing.assert_array_equal(c2(x)[0], y)
