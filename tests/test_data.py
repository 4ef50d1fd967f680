"""bnsweep.data: file checks, subsets, batches, and augmentation against an
independent per-image Keras reference."""

from __future__ import annotations

import hashlib
import pickle
import time
import warnings

import numpy as np
import pytest
import torch

from bnsweep import augment, data
from bnsweep.config import ConfigError, make_config

ndimage = pytest.importorskip("scipy.ndimage")


# --------------------------------------------------------------------------
# Augmentation against Keras, image by image
# --------------------------------------------------------------------------

def keras_reference(img_hwc: np.ndarray, shear_deg: float, zx: float, zy: float, flip: bool) -> np.ndarray:
    """keras-preprocessing 1.0.x-1.1.0 (Keras 2.2-2.3) ImageDataGenerator.apply_transform for
    one channels_last image (row_axis=0, col_axis=1, channel_axis=2),
    written out from its source: apply_affine_transform, then flip_axis."""
    transform_matrix = None
    if shear_deg != 0:
        shear = np.deg2rad(shear_deg)
        transform_matrix = np.array([[1, -np.sin(shear), 0],
                                     [0, np.cos(shear), 0],
                                     [0, 0, 1]])
    if zx != 1 or zy != 1:
        zoom_matrix = np.array([[zx, 0, 0], [0, zy, 0], [0, 0, 1]])
        transform_matrix = zoom_matrix if transform_matrix is None else np.dot(transform_matrix, zoom_matrix)
    x = img_hwc
    if transform_matrix is not None:
        h, w = x.shape[0], x.shape[1]
        # transform_matrix_offset_center(matrix, h, w)
        o_x, o_y = float(h) / 2 + 0.5, float(w) / 2 + 0.5
        offset_matrix = np.array([[1, 0, o_x], [0, 1, o_y], [0, 0, 1]])
        reset_matrix = np.array([[1, 0, -o_x], [0, 1, -o_y], [0, 0, 1]])
        transform_matrix = np.dot(np.dot(offset_matrix, transform_matrix), reset_matrix)
        x = np.rollaxis(x, 2, 0)
        final_affine_matrix = transform_matrix[:2, :2]
        final_offset = transform_matrix[:2, 2]
        channel_images = [ndimage.affine_transform(x_channel, final_affine_matrix, final_offset,
                                                   order=1, mode="nearest", cval=0.0)
                          for x_channel in x]
        x = np.stack(channel_images, axis=0)
        x = np.rollaxis(x, 0, 3)
    if flip:  # flip_axis(x, img_col_axis)
        x = x[:, ::-1, :]
    return x


def reference_batch(x: torch.Tensor, draws: augment.AugmentDraws) -> torch.Tensor:
    out = []
    for i in range(x.shape[0]):
        img = x[i].permute(1, 2, 0).double().numpy()
        ref = keras_reference(img, float(draws.shear_deg[i]), float(draws.zx[i]), float(draws.zy[i]),
                              bool(draws.flip[i]))
        out.append(torch.from_numpy(np.ascontiguousarray(ref)).permute(2, 0, 1))
    return torch.stack(out).float()


def extreme_draws() -> augment.AugmentDraws:
    # Range limits of the reference (shear ±0.2°, zoom 0.8/1.2) mixed, plus large
    # shears (±30°) so that a wrong sign, axis or centre would show clearly.
    shear = [0.2, -0.2, 0.2, -0.2, 30.0, -30.0, 0.0, 0.1, 12.0, -7.0]
    zx = [0.8, 1.2, 1.2, 0.8, 1.0, 0.9, 0.8, 1.0, 1.2, 1.13]
    zy = [1.2, 0.8, 1.2, 0.8, 1.0, 1.1, 0.8, 1.0, 0.85, 0.94]
    flip = [False, True, False, True, True, False, True, False, True, False]
    return augment.AugmentDraws(torch.tensor(shear), torch.tensor(zx), torch.tensor(zy), torch.tensor(flip))


@pytest.mark.parametrize("height,width", [(32, 32), (24, 32)])  # non-square catches a row/column mix-up
def test_augmentation_matches_keras_per_image(height, width):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(10, 3, height, width, generator=g)
    draws = extreme_draws()
    got = augment.apply_augmentation(x, draws)
    want = reference_batch(x, draws)
    torch.testing.assert_close(got, want, atol=1e-4, rtol=0)


def test_random_draws_match_keras_per_image():
    g = torch.Generator().manual_seed(3)
    x = torch.rand(64, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    draws = augment.draw_augmentation(64, g, 0.2, 0.2, True, "cpu")
    torch.testing.assert_close(augment.apply_augmentation(x, draws), reference_batch(x, draws), atol=1e-4, rtol=0)


def test_augment_is_draw_then_apply_and_reproducible():
    x = torch.rand(32, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    out1 = augment.augment(x, torch.Generator().manual_seed(7), 0.2, 0.2, True)
    out2 = augment.augment(x, torch.Generator().manual_seed(7), 0.2, 0.2, True)
    draws = augment.draw_augmentation(32, torch.Generator().manual_seed(7), 0.2, 0.2, True, "cpu")
    assert torch.equal(out1, out2)
    assert torch.equal(out1, augment.apply_augmentation(x, draws))
    assert not torch.equal(out1, augment.augment(x, torch.Generator().manual_seed(8), 0.2, 0.2, True))


def test_draws_follow_keras_distributions():
    draws = augment.draw_augmentation(20_000, torch.Generator().manual_seed(0), 0.2, 0.2, True, "cpu")
    assert draws.shear_deg.abs().max() <= 0.2 and draws.shear_deg.std() > 0.1  # U(-0.2, 0.2) degrees
    for z in (draws.zx, draws.zy):
        assert z.min() >= 0.8 and z.max() <= 1.2
    assert abs(np.corrcoef(draws.zx.numpy(), draws.zy.numpy())[0, 1]) < 0.05  # drawn independently
    assert 0.48 < draws.flip.float().mean() < 0.52
    no_flip = augment.draw_augmentation(100, torch.Generator().manual_seed(0), 0.2, 0.2, False, "cpu")
    assert not no_flip.flip.any()


def test_augment_without_transforms_is_identity():
    x = torch.rand(8, 3, 32, 32)
    assert torch.equal(augment.augment(x, torch.Generator().manual_seed(0), 0.0, 0.0, False), x)


def test_augment_rejects_uint8():
    with pytest.raises(TypeError, match="to_unit_float"):
        augment.augment(torch.zeros(2, 3, 32, 32, dtype=torch.uint8), torch.Generator(), 0.2, 0.2, True)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_augmentation_on_cuda_matches_keras():
    x = torch.rand(10, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    draws = extreme_draws()
    on_gpu = augment.AugmentDraws(*(t.cuda() for t in (draws.shear_deg, draws.zx, draws.zy, draws.flip)))
    got = augment.apply_augmentation(x.cuda(), on_gpu).cpu()
    torch.testing.assert_close(got, reference_batch(x, draws), atol=1e-4, rtol=0)
    g = data.make_generator(0, "cuda")
    assert augment.augment(x.cuda(), g, 0.2, 0.2, True).device.type == "cuda"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_augmentation_never_waits_for_the_gpu():
    # docs/design.md §5: no host sync per step. "error" mode raises on any synchronising call.
    x, g = torch.rand(250, 3, 32, 32, device="cuda"), data.make_generator(0, "cuda")
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        augment.augment(x, g, 0.2, 0.2, True)
    finally:
        torch.cuda.set_sync_debug_mode("default")


# --------------------------------------------------------------------------
# Finding and checking the files
# --------------------------------------------------------------------------

def test_resolve_data_dir_precedence(monkeypatch, tmp_path):
    monkeypatch.setenv("BNSWEEP_DATA_DIR", str(tmp_path / "env"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert data.resolve_data_dir(str(tmp_path / "flag")) == tmp_path / "flag"
    assert data.resolve_data_dir(None) == tmp_path / "env"
    monkeypatch.delenv("BNSWEEP_DATA_DIR")
    assert data.resolve_data_dir(None) == tmp_path / "xdg" / "bnsweep"


def link_copy(src_root, dst_root, replace: dict[str, bytes] | None = None):
    """dst_root/cifar-10-batches-py with links to src's files, some replaced by bytes."""
    folder = dst_root / data.BASE_FOLDER
    folder.mkdir(parents=True)
    for name in data.CIFAR_FILES:
        if replace and name in replace:
            (folder / name).write_bytes(replace[name])
        else:
            (folder / name).symlink_to(src_root / data.BASE_FOLDER / name)
    return dst_root


def test_unverified_copy_loads_with_one_warning(cifar_dir, monkeypatch):
    monkeypatch.setattr(data, "_WARNED_FINGERPRINTS", set())
    data.clear_cache()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        d = data.load_cifar10(cifar_dir, download=False)
    if d.identity["dataset_verified"]:
        pytest.skip("$BNSWEEP_DATA_DIR holds the official files, not a copy")
    assert [w.category for w in caught] == [data.UnverifiedDataWarning]
    assert "unverified copy" in str(caught[0].message)
    assert d.identity["dataset_source"] == "unverified copy"
    assert len(d.identity["dataset_fingerprint"]) == 16
    assert d.train_x.shape == (50_000, 3, 32, 32) and d.train_x.dtype == torch.uint8
    assert d.test_x.shape == (10_000, 3, 32, 32) and d.test_x.dtype == torch.uint8
    assert d.train_y.dtype == torch.int64 and d.test_y.dtype == torch.int64
    assert torch.equal(d.train_y.bincount(), torch.full((10,), 5000))
    assert torch.equal(d.test_y.bincount(), torch.full((10,), 1000))
    assert d.classes[0] == "airplane" and d.classes[9] == "truck"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # cached, and warned once already
        assert data.load_cifar10(cifar_dir, download=False) is d


def test_files_matching_the_md5_table_are_verified(cifar_dir, tmp_path, monkeypatch):
    # Real official bytes cannot be made up, so point the table at these files' md5s.
    folder = cifar_dir / data.BASE_FOLDER
    table = {name: hashlib.md5((folder / name).read_bytes()).hexdigest() for name in data.CIFAR_FILES}
    monkeypatch.setattr(data, "OFFICIAL_MD5", table)
    root = link_copy(cifar_dir, tmp_path / "official")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        d = data.load_cifar10(root, download=False)
    assert d.identity["dataset_verified"] is True
    assert d.identity["dataset_source"] == "official"
    data.clear_cache()


def pickled(record) -> bytes:
    return pickle.dumps(record, protocol=2)


def good_batch(**changes) -> dict:
    record = {"batch_label": "x", "data": np.zeros((10_000, 3072), np.uint8),
              "labels": [i % 10 for i in range(10_000)], "filenames": []}
    record.update(changes)
    return record


# Each bad file's bytes are made when its test runs, not when the tests are collected: a batch
# is up to 120 MB, and a parameter's bytes would become the test's id (sent to every xdist worker).
BAD_FILES = {
    "truncated": ("data_batch_3", None, "truncated or corrupted"),
    "wrong shape": ("data_batch_1", lambda: pickled(good_batch(data=np.zeros((10_000, 1024), np.uint8))), "shape"),
    "float pixels": ("data_batch_1", lambda: pickled(good_batch(data=np.zeros((10_000, 3072), np.float32))), "uint8"),
    "label 10": ("data_batch_1", lambda: pickled(good_batch(labels=[10] * 10_000)), "labels range"),
    "not a pickle": ("data_batch_1", lambda: b"not a pickle at all", "truncated or corrupted"),
}


@pytest.mark.parametrize("case", BAD_FILES)
def test_bad_file_raises_data_error_naming_it(cifar_dir, tmp_path, case):
    name, make, message = BAD_FILES[case]
    if make is None:  # the real file, cut in half
        raw = (cifar_dir / data.BASE_FOLDER / name).read_bytes()
        content = raw[: len(raw) // 2]
    else:
        content = make()
    root = link_copy(cifar_dir, tmp_path / "bad", replace={name: content})
    with pytest.raises(data.DataError, match=message) as err:
        data.load_cifar10(root, download=False)
    assert str(root / data.BASE_FOLDER / name) in str(err.value)
    assert "BNSWEEP_DATA_DIR" in str(err.value)


def test_missing_files_without_download(tmp_path):
    with pytest.raises(data.DataError, match="missing") as err:
        data.load_cifar10(tmp_path / "nothing", download=False)
    assert "cifar-10-python.tar.gz" in str(err.value) and "--data-dir" in str(err.value)


def test_missing_files_download_fails_fast_without_network(tmp_path, monkeypatch):
    # TEST-NET-1 (RFC 5737) is never routed: offline behaviour, even where CI has internet.
    monkeypatch.setattr(data, "DOWNLOAD_URL", "https://192.0.2.1/cifar-10-python.tar.gz")
    start = time.monotonic()
    with pytest.raises(data.DataError, match="cannot be reached"):
        data.load_cifar10(tmp_path / "nothing", download=True)
    assert time.monotonic() - start < 15


# --------------------------------------------------------------------------
# Synthetic data, subsets, batches
# --------------------------------------------------------------------------

def test_synthetic_is_cifar_shaped_and_learnable():
    d = data.synthetic_cifar10(n_train=500, n_test=200, seed=0)
    assert d.train_x.shape == (500, 3, 32, 32) and d.train_x.dtype == torch.uint8
    assert d.test_x.shape == (200, 3, 32, 32) and d.test_y.dtype == torch.int64
    assert d.identity == {"dataset_verified": False, "dataset_fingerprint": "synthetic",
                          "dataset_source": "synthetic"}
    assert torch.equal(d.train_x, data.synthetic_cifar10(500, 200, 0).train_x)
    # a nearest-class-mean-colour classifier, fitted on train, does well on test
    means = torch.stack([d.train_x[d.train_y == c].float().mean((0, 2, 3)) for c in range(10)])
    pred = torch.cdist(d.test_x.float().mean((2, 3)), means).argmin(1)
    assert (pred == d.test_y).float().mean() > 0.9


def test_balanced_indices():
    labels = torch.arange(20_000) % 10
    labels = labels[torch.randperm(20_000, generator=torch.Generator().manual_seed(0))]
    idx = data.balanced_indices(labels, 1003, seed=5)
    assert len(idx) == 1003 and len(idx.unique()) == 1003
    assert labels[idx].bincount().tolist() == [101, 101, 101] + [100] * 7  # remainder to the lowest classes
    assert torch.equal(idx, data.balanced_indices(labels, 1003, seed=5))
    assert not torch.equal(idx, data.balanced_indices(labels, 1003, seed=6))
    small = data.balanced_indices(labels, 500, seed=5)
    assert set(small.tolist()) <= set(idx.tolist())  # nested: a smaller subset is inside a larger one
    with pytest.raises(ValueError, match="class"):
        data.balanced_indices(labels, 20_010, seed=0)


def indexed_dataset() -> data.Cifar10:
    # Images replaced by their own indices, so selections can be traced back.
    train_y = (torch.arange(50_000) % 10)[torch.randperm(50_000, generator=torch.Generator().manual_seed(1))]
    test_y = torch.arange(10_000) % 10
    return data.Cifar10(torch.arange(50_000), train_y, torch.arange(10_000), test_y, identity={})


def test_select_reference_uses_everything():
    d = indexed_dataset()
    s = data.select(make_config(), d)
    assert torch.equal(s.train_x, d.train_x) and torch.equal(s.val_x, d.test_x)


def test_select_holdout_is_disjoint_balanced_and_fixed():
    d = indexed_dataset()
    s = data.select(make_config({"val_split": "holdout", "n_train": 1000}), d)
    assert len(s.val_x) == 5000 and s.val_y.bincount().tolist() == [500] * 10
    assert len(s.train_x) == 1000 and s.train_y.bincount().tolist() == [100] * 10
    assert not set(s.val_x.tolist()) & set(s.train_x.tolist())
    assert torch.equal(d.train_y[s.val_x], s.val_y) and torch.equal(d.train_y[s.train_x], s.train_y)
    # the same images whatever the trial's seed
    other = data.select(make_config({"val_split": "holdout", "n_train": 1000, "seed": 9}), d)
    assert torch.equal(other.train_x, s.train_x) and torch.equal(other.val_x, s.val_x)
    full = data.select(make_config({"val_split": "holdout"}), d)
    assert len(full.train_x) == 45_000 and not set(full.val_x.tolist()) & set(full.train_x.tolist())


def test_select_test_subset():
    s = data.select(make_config({"n_val": 2000, "n_train": 5000}), indexed_dataset())
    assert len(s.val_x) == 2000 and s.val_y.bincount().tolist() == [200] * 10
    assert len(s.train_x) == 5000 and s.train_y.bincount().tolist() == [500] * 10


def test_select_too_many_images_names_the_key():
    with pytest.raises(ConfigError, match="n_train"):
        data.select(make_config({"n_train": 1000, "batch_size": 100}), data.synthetic_cifar10(500, 200))


def test_batches_cover_every_index_once_and_keep_the_last_partial_batch():
    g = torch.Generator().manual_seed(0)
    epoch1 = data.batches(1003, 250, g, "cpu")
    assert [len(b) for b in epoch1] == [250, 250, 250, 250, 3]
    assert torch.equal(torch.cat(epoch1).sort().values, torch.arange(1003))
    epoch2 = data.batches(1003, 250, g, "cpu")
    assert torch.equal(torch.cat(epoch2).sort().values, torch.arange(1003))
    assert not torch.equal(torch.cat(epoch1), torch.cat(epoch2))  # a new order every epoch
    again = data.batches(1003, 250, torch.Generator().manual_seed(0), "cpu")
    assert all(torch.equal(a, b) for a, b in zip(epoch1, again))


def test_to_unit_float():
    x = torch.tensor([0, 51, 255], dtype=torch.uint8)
    torch.testing.assert_close(data.to_unit_float(x), torch.tensor([0.0, 0.2, 1.0]))
