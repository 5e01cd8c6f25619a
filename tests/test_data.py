"""rbdlib.data: parsing the real file formats, the download path, the paper's split, augmentation."""

import doctest
import gzip
import hashlib
import io
import os
import struct
import tarfile
import time
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch

from rbdlib import data
from rbdlib.data import (
    DatasetFormatError,
    DatasetNotFoundError,
    RemoteFile,
    augment_cifar,
    augment_mnist,
    batches,
    best_available,
    formats,
    load_dataset,
    random_crop,
    sources,
)

FMNIST = Path("/usr/share/datasets/fashion-mnist")


# ------------------------------------------------------------------------------------------------
# Writers for the real formats


def idx_bytes(array: np.ndarray) -> bytes:
    """IDX: 0x0000, type 0x08 (unsigned byte), ndim, big-endian dims, then the data."""
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_mnist_like(folder: Path, n_train: int, n_test: int = 7, gz: bool = True) -> dict:
    """Images whose first two pixels encode their index, so splits can be checked exactly."""
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = np.zeros((n, 28, 28), np.uint8)
        index = np.arange(n)
        images[:, 0, 0], images[:, 0, 1], images[:, 5:9, 5:9] = index // 256, index % 256, 200
        labels = (index % 10).astype(np.uint8)
        for kind, array in (("images-idx3", images), ("labels-idx1", labels)):
            name = f"{prefix}-{kind}-ubyte" + (".gz" if gz else "")
            raw = idx_bytes(array)
            (folder / name).write_bytes(gzip.compress(raw) if gz else raw)
        arrays[prefix] = (images, labels)
    return arrays


def decode_index(x: torch.Tensor) -> torch.Tensor:
    pixels = (x[:, 0, 0, :2] * 255).round().long()
    return pixels[:, 0] * 256 + pixels[:, 1]


def cifar_records(n: int, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    records = rng.integers(0, 256, (n, 3073), dtype=np.uint8)
    records[:, 0] = np.arange(n) % 10
    return records.tobytes()


def write_cifar_archive(path: Path, n_per_batch: int = 4, extra_members: dict | None = None) -> None:
    members = {f"cifar-10-batches-bin/data_batch_{i}.bin": cifar_records(n_per_batch, i) for i in range(1, 6)}
    members["cifar-10-batches-bin/test_batch.bin"] = cifar_records(3, 99)
    members["cifar-10-batches-bin/batches.meta.txt"] = b"airplane\nautomobile\n"
    members.update(extra_members or {})
    with tarfile.open(path, "w:gz") as tar:
        for name, payload in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """No RBDLIB_DATA, an empty user cache under tmp_path, no system folders, no network."""
    monkeypatch.delenv("RBDLIB_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    for name in ("fashion-mnist", "mnist", "cifar10"):
        monkeypatch.setitem(data.SYSTEM_DIRS, name, ())

    def offline(url, timeout=None):
        raise urllib.error.URLError("network disabled in tests")

    monkeypatch.setattr(sources, "_urlopen", offline)
    return tmp_path


# ------------------------------------------------------------------------------------------------
# Parsing and splitting


def test_idx_files_load_through_root_with_a_contiguous_validation_block(isolated):
    arrays = write_mnist_like(isolated / "files", n_train=60)
    ds = load_dataset("mnist", root=isolated / "files", val_size=10, split_seed=3)
    assert (len(ds.train_x), len(ds.val_x), len(ds.test_x)) == (50, 10, 7)
    assert ds.train_x.shape[1:] == (1, 28, 28) and ds.train_x.dtype == torch.float32
    assert ds.train_y.dtype == torch.int64 and ds.source_path == str(isolated / "files")
    assert 0.0 <= ds.train_x.min() and ds.train_x.max() <= 1.0
    val_index = decode_index(ds.val_x)
    assert torch.equal(val_index, torch.arange(val_index[0], val_index[0] + 10))  # one contiguous block
    everything = torch.cat([decode_index(ds.train_x), val_index]).sort().values
    assert torch.equal(everything, torch.arange(60))
    assert torch.equal(ds.val_y, val_index % 10)
    test_images, test_labels = arrays["t10k"]
    assert torch.equal(ds.test_x[:, 0], torch.from_numpy(test_images / 255.0).float())  # untouched
    assert torch.equal(ds.test_y, torch.from_numpy(test_labels).long())


def test_split_seed_chooses_the_offset_deterministically(isolated):
    write_mnist_like(isolated, n_train=200)
    offsets = {s: int(decode_index(load_dataset("mnist", root=isolated, val_size=10, split_seed=s).val_x)[0])
               for s in range(5)}  # fmt: skip
    assert len(set(offsets.values())) > 1
    again = load_dataset("mnist", root=isolated, val_size=10, split_seed=2)
    assert decode_index(again.val_x)[0] == offsets[2]


def test_default_validation_split_is_10000_images(isolated):
    write_mnist_like(isolated, n_train=10_050)
    ds = load_dataset("fashion-mnist", root=isolated)
    assert (len(ds.train_x), len(ds.val_x)) == (50, 10_000)
    with pytest.raises(ValueError, match="val_size=20000"):
        load_dataset("fashion-mnist", root=isolated, val_size=20_000)


def test_uncompressed_idx_and_name_subfolder(isolated):
    write_mnist_like(isolated / "mnist", n_train=30, gz=False)
    assert len(load_dataset("mnist", root=isolated, val_size=5).train_x) == 25


def test_wrong_magic_number_is_reported(isolated):
    write_mnist_like(isolated, n_train=20)
    labels = idx_bytes(np.zeros(20, np.uint8))
    (isolated / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(labels))  # labels where images go
    with pytest.raises(DatasetFormatError, match="magic number 2049, expected 2051"):
        load_dataset("mnist", root=isolated, val_size=5)


def test_truncated_gzip_is_reported(isolated):
    write_mnist_like(isolated, n_train=20)
    path = isolated / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-30])
    with pytest.raises(DatasetFormatError, match="t10k-images"):
        load_dataset("mnist", root=isolated, val_size=5)


def test_cifar_binary_archive_is_extracted_safely_and_standardised(isolated):
    evil = {"../evil.txt": b"x", "/tmp/evil_abs.txt": b"x", "cifar-10-batches-bin/../../evil2.txt": b"x"}
    folder = isolated / "c"
    folder.mkdir()
    write_cifar_archive(folder / "cifar-10-binary.tar.gz", extra_members=evil)
    ds = load_dataset("cifar10", root=folder, val_size=5)
    assert (len(ds.train_x), len(ds.val_x), len(ds.test_x)) == (15, 5, 3)
    assert ds.train_x.shape[1:] == (3, 32, 32) and ds.classes[0] == "airplane"
    flat = torch.cat([ds.train_x, ds.test_x]).flatten(1)
    torch.testing.assert_close(flat.mean(1), torch.zeros(len(flat)), atol=1e-5, rtol=0)
    torch.testing.assert_close(flat.std(1, unbiased=False), torch.ones(len(flat)), atol=1e-4, rtol=0)
    assert sorted(p.name for p in (folder / "cifar-10-batches-bin").iterdir()) == sorted(
        ["batches.meta.txt", "test_batch.bin"] + [f"data_batch_{i}.bin" for i in range(1, 6)]
    )
    assert not list(isolated.rglob("evil*")) and not Path("/tmp/evil_abs.txt").exists()
    # The pixels are the record bytes in R, G, B plane order: check the first test image.
    raw = np.frombuffer(cifar_records(3, 99), np.uint8).reshape(3, 3073)
    expected = data.standardize_per_image(torch.from_numpy(raw[:, 1:] / 255.0).float().view(3, 3, 32, 32))
    torch.testing.assert_close(ds.test_x, expected)
    assert ds.test_y.tolist() == [0, 1, 2]


def test_digits_always_works_offline(isolated):
    ds = load_dataset("digits")
    assert ds.in_shape == (1, 8, 8) and (len(ds.train_x), len(ds.val_x), len(ds.test_x)) == (1079, 359, 359)
    again = load_dataset("digits")
    assert torch.equal(ds.train_x, again.train_x) and torch.equal(ds.test_y, again.test_y)
    assert torch.equal(load_dataset("digits", split_seed=5).test_x, ds.test_x)  # the test set never moves


# ------------------------------------------------------------------------------------------------
# Finding and downloading


def test_missing_dataset_offline_lists_the_places_tried(isolated):
    with pytest.raises(DatasetNotFoundError) as info:
        load_dataset("fashion-mnist", root=isolated / "nowhere", download=False)
    message = str(info.value)
    assert isinstance(info.value, FileNotFoundError)
    assert str(isolated / "nowhere") in message
    assert str(isolated / "cache" / "rbdlib" / "fashion-mnist") in message
    assert "apt-get install dataset-fashion-mnist" in message and "RBDLIB_DATA" in message
    assert "download=True" in message


def test_network_failure_surfaces_as_not_found_with_the_cause(isolated):
    with pytest.raises(DatasetNotFoundError, match="network disabled") as info:
        load_dataset("mnist")
    assert info.value.__cause__ is not None
    assert not [p for p in isolated.rglob("*") if p.is_file()]


def test_rbdlib_data_environment_variable_is_searched(isolated, monkeypatch):
    write_mnist_like(isolated / "shared" / "mnist", n_train=20)
    monkeypatch.setenv("RBDLIB_DATA", str(isolated / "shared"))
    assert load_dataset("mnist", val_size=5, download=False).source_path == str(isolated / "shared" / "mnist")


def serve(monkeypatch, name: str, folder: Path, sha256: dict | None = None) -> None:
    """Point SOURCES[name] at file:// URLs of the files in ``folder``."""
    remotes = []
    for path in sorted(folder.iterdir()):
        digest = (sha256 or {}).get(path.name, hashlib.sha256(path.read_bytes()).hexdigest())
        remotes.append(RemoteFile(path.name, (path.as_uri(),), digest))
    monkeypatch.setitem(data.SOURCES, name, tuple(remotes))
    monkeypatch.setattr(sources, "_urlopen", sources.urllib.request.urlopen)


def test_good_download_is_cached_and_reused(isolated, monkeypatch):
    write_mnist_like(isolated / "server", n_train=20)
    serve(monkeypatch, "mnist", isolated / "server")
    ds = load_dataset("mnist", val_size=5, progress=False)
    cache = isolated / "cache" / "rbdlib" / "mnist"
    assert ds.source_path == str(cache) and len(list(cache.glob("*.gz"))) == 4
    assert not list(cache.glob(".*"))  # no temporary files left behind
    for path in (isolated / "server").iterdir():
        path.unlink()  # the "network" is gone; the cache must be enough
    assert torch.equal(load_dataset("mnist", val_size=5, download=False).train_x, ds.train_x)


def test_checksum_mismatch_keeps_nothing(isolated, monkeypatch):
    write_mnist_like(isolated / "server", n_train=20)
    serve(monkeypatch, "mnist", isolated / "server", sha256={"t10k-images-idx3-ubyte.gz": "0" * 64})
    with pytest.raises(DatasetNotFoundError, match="SHA-256 mismatch"):
        load_dataset("mnist", val_size=5, progress=False)
    cache = isolated / "cache" / "rbdlib" / "mnist"
    assert not (cache / "t10k-images-idx3-ubyte.gz").exists()
    assert not [p for p in cache.iterdir() if p.name.startswith(".")]


class FakeResponse(io.BytesIO):
    def __init__(self, payload: bytes, claimed_length: int):
        super().__init__(payload)
        self.headers = {"Content-Length": str(claimed_length)}


def test_truncated_download_keeps_nothing(isolated, monkeypatch):
    payload = gzip.compress(idx_bytes(np.random.default_rng(0).integers(0, 256, (3, 28, 28))))
    remote = RemoteFile("t10k-images-idx3-ubyte.gz", ("https://example.invalid/t10k",), "0" * 64)
    monkeypatch.setitem(data.SOURCES, "mnist", (remote,))
    monkeypatch.setattr(sources, "_urlopen", lambda url, timeout=None: FakeResponse(payload[:50], len(payload)))
    with pytest.raises(DatasetNotFoundError, match="truncated download: got 50 of"):
        load_dataset("mnist", progress=False)
    cache = isolated / "cache" / "rbdlib" / "mnist"
    assert list(cache.iterdir()) == []


def test_best_available_falls_back_to_digits_and_says_so(isolated):
    ds, message = best_available("fashion-mnist", root=isolated / "nowhere", download=False)
    assert ds.name == "digits"
    assert message.startswith("Using digits") and "fashion-mnist is not available" in message


@pytest.mark.skipif(not FMNIST.is_dir(), reason="Debian package dataset-fashion-mnist not installed")
def test_real_fashion_mnist_from_the_debian_package(monkeypatch, tmp_path):
    monkeypatch.delenv("RBDLIB_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    ds = load_dataset("fashion-mnist", download=False)
    assert ds.source_path == str(FMNIST)
    assert (len(ds.train_x), len(ds.val_x), len(ds.test_x)) == (50_000, 10_000, 10_000)
    assert ds.train_x.shape[1:] == (1, 28, 28) and ds.train_x.dtype == torch.float32
    assert float(ds.train_x.min()) == 0.0 and float(ds.train_x.max()) == 1.0
    assert torch.equal(ds.test_y.bincount(), torch.full((10,), 1000))
    assert torch.equal(torch.cat([ds.train_y, ds.val_y]).bincount(), torch.full((10,), 6000))


# ------------------------------------------------------------------------------------------------
# Augmentation and batches


def test_random_crop_is_a_shifted_copy_of_the_padded_image():
    x = torch.rand(500, 2, 28, 28)
    out = random_crop(x, 3, torch.Generator().manual_seed(0))
    padded = torch.nn.functional.pad(x, (3, 3, 3, 3))
    windows = padded.unfold(2, 28, 1).unfold(3, 28, 1)  # n x c x 7 x 7 x 28 x 28: every possible crop
    matches = (windows == out[:, :, None, None]).flatten(4).all(-1).all(1)  # n x 7 x 7
    assert torch.equal(matches.flatten(1).sum(1), torch.ones(500, dtype=torch.long))  # one offset each
    offsets = matches.flatten(1).float().argmax(1)
    assert len(offsets.unique()) == 49  # every offset in 0..6 x 0..6 occurs


def test_augment_mnist_adds_one_uniform_brightness_shift_per_image():
    x = torch.rand(4000, 1, 28, 28)
    out = augment_mnist(x, torch.Generator().manual_seed(1))
    crops = random_crop(x, 3, torch.Generator().manual_seed(1))  # same draws for the crop offsets
    shift = (out - crops).flatten(1)
    torch.testing.assert_close(shift, shift[:, :1].expand_as(shift))  # constant within each image
    shift = shift[:, 0]
    assert -0.5 <= shift.min() and shift.max() <= 0.5
    assert abs(shift.mean()) < 0.02 and abs(shift.std() - 12**-0.5) < 0.01
    assert torch.equal(out, augment_mnist(x, torch.Generator().manual_seed(1)))  # reproducible


def test_augment_cifar_crops_and_flips_half_the_images():
    x = torch.randn(300, 3, 32, 32)
    out = augment_cifar(x, torch.Generator().manual_seed(0))
    assert out.shape == x.shape
    windows = torch.nn.functional.pad(x, (4, 4, 4, 4)).unfold(2, 32, 1).unfold(3, 32, 1)  # all 9 x 9 crops

    def is_a_crop(images):
        return (windows == images[:, :, None, None]).flatten(4).all(-1).all(1).flatten(1).any(1)

    plain, flipped = is_a_crop(out), is_a_crop(out.flip(-1))
    assert (plain | flipped).all()
    assert 0.35 < flipped.float().mean() < 0.65


def test_batches_cover_every_example_once():
    x, y = torch.arange(103.0), torch.arange(103)
    seen = torch.cat([b for b, _ in batches(x, y, 10, generator=torch.Generator().manual_seed(0))])
    assert torch.equal(seen.sort().values, x) and not torch.equal(seen, x)
    assert sum(1 for _ in batches(x, y, 10, drop_last=True)) == 10
    with pytest.raises(ValueError, match="differ in length"):
        next(batches(x, y[:5]))


def test_docstring_examples():
    assert doctest.testmod(data).failed == 0


# ------------------------------------------------------------------------------------------------
# Bad files and arguments (issue 13)


def test_idx_file_shorter_than_its_header_is_a_format_error(isolated):
    write_mnist_like(isolated, n_train=20)
    (isolated / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(b"\x00\x00\x08\x01\x00\x00"))
    with pytest.raises(DatasetFormatError, match="6 bytes cannot hold the IDX header"):
        load_dataset("mnist", root=isolated, val_size=5)


def test_idx_labels_out_of_range_are_rejected(isolated):
    write_mnist_like(isolated, n_train=20)
    labels = np.arange(20) % 10
    labels[3] = 200
    (isolated / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(labels)))
    with pytest.raises(DatasetFormatError, match="label 200 out of range 0..9"):
        load_dataset("mnist", root=isolated, val_size=5)


@pytest.mark.parametrize("val_size, error, message", [(0, ValueError, "val_size=0 must be between 1"),
                                                       (20, ValueError, "val_size=20 must be between 1 and 19"),
                                                       (2.5, TypeError, "val_size must be an int"),
                                                       (True, TypeError, "val_size must be an int")])
def test_val_size_is_honoured_or_rejected(isolated, val_size, error, message):
    write_mnist_like(isolated, n_train=20)
    with pytest.raises(error, match=message):
        load_dataset("mnist", root=isolated, val_size=val_size)
    if val_size != 20:
        with pytest.raises(error, match=message):
            load_dataset("digits", val_size=val_size)
    assert len(load_dataset("mnist", root=isolated, val_size=1).val_x) == 1


def test_a_killed_download_leaves_no_part_file_and_stale_ones_are_removed(isolated, monkeypatch):
    payload = gzip.compress(idx_bytes(np.zeros((3, 28, 28))))
    remote = RemoteFile("t10k-images-idx3-ubyte.gz", ("https://example.invalid/t10k",), "0" * 64)
    monkeypatch.setitem(data.SOURCES, "mnist", (remote,))
    cache = isolated / "cache" / "rbdlib" / "mnist"
    cache.mkdir(parents=True)
    stale, fresh = cache / ".t10k-images-idx3-ubyte.gz.dead.part", cache / ".t10k-images-idx3-ubyte.gz.live.part"
    stale.write_bytes(b"x")
    fresh.write_bytes(b"x")
    os.utime(stale, (time.time() - 2 * sources.STALE_PART_SECONDS,) * 2)

    class Killed(FakeResponse):
        def read(self, n=-1):
            raise KeyboardInterrupt  # the user stops the download half-way

    monkeypatch.setattr(sources, "_urlopen", lambda url, timeout=None: Killed(payload, len(payload)))
    with pytest.raises(KeyboardInterrupt):
        load_dataset("mnist", progress=False)
    assert sorted(p.name for p in cache.iterdir()) == [fresh.name]  # the stale one went, no new one stayed


# ------------------------------------------------------------------------------------------------
# Bombs: a small file must not make the reader spend memory the format says it cannot need


def test_idx_gzip_bomb_is_refused_from_its_header_before_inflating(tmp_path):
    """A header declaring 342,000 images (0.26 MB compressed) is refused before any pixel is read."""
    path = tmp_path / "bomb-idx3-ubyte.gz"
    header = struct.pack(">HBB", 0, 0x08, 3) + struct.pack(">3I", 342_000, 28, 28)
    with gzip.open(path, "wb") as f:
        f.write(header + bytes(342_000 * 784))
    assert path.stat().st_size < 1_000_000
    with pytest.raises(DatasetFormatError, match=r"declares shape \(342000, 28, 28\).*more than the 54,880,000"):
        data.read_idx(path, 2051)


def test_idx_whose_data_outgrows_its_header_stops_reading_at_the_declared_size(tmp_path, monkeypatch):
    """A header of 20 images over 342,000 images of data: one byte past the 20 is read, then the error."""
    path = tmp_path / "long-idx3-ubyte.gz"
    header = struct.pack(">HBB", 0, 0x08, 3) + struct.pack(">3I", 20, 28, 28)
    with gzip.open(path, "wb") as f:
        f.write(header + bytes(342_000 * 784))
    asked = []
    read = gzip.GzipFile.read
    monkeypatch.setattr(gzip.GzipFile, "read", lambda self, n=-1: asked.append(n) or read(self, n))
    with pytest.raises(DatasetFormatError, match="more bytes than the 15696 its header declares"):
        data.read_idx(path, 2051)
    assert -1 not in asked and max(asked) == 20 * 784 + 1


def test_cifar_member_larger_than_a_batch_is_refused_before_extracting(tmp_path):
    folder = tmp_path / "c"
    folder.mkdir()
    big = {"cifar-10-batches-bin/data_batch_1.bin": bytes(formats.CIFAR_BATCH_BYTES + 3073)}
    write_cifar_archive(folder / "cifar-10-binary.tar.gz", extra_members=big)
    with pytest.raises(DatasetFormatError, match="data_batch_1.bin declares 30,733,073 bytes, more than a CIFAR-10"):
        formats._extract_cifar(folder / "cifar-10-binary.tar.gz")
    assert not [p for p in (folder / "cifar-10-batches-bin").iterdir() if p.name.startswith("data_batch_1")]
