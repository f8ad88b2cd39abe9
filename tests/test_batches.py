"""The epoch order is a function of (seed, epoch): the same weights whatever the loader workers, the
resumes, or whether batches come from the cache file or from a copy of it in device memory."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DistributedSampler

from us8k_lib.dataset import US8KDataset
from us8k_lib.engine.batches import (
    DEVICE_FRACTION,
    DeviceBatches,
    EpochSampler,
    choose_data_path,
    make_loader,
    resident_waveforms,
)
from us8k_lib.engine.fit import fit
from us8k_lib.recipe import TrainConfig

# Small for testing: a narrow M5 (width 8) on tiny, three epochs of five batches.
SMALL = dict(epochs=3, batch_size=16, lr=3e-3, width=8, seed=5)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> object:
    return tmp_path_factory.mktemp("batches-cache")


def _weights(result: object) -> dict[str, torch.Tensor]:
    return result.model.state_dict()


def _assert_identical(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs"


def test_the_order_depends_on_seed_and_epoch_only() -> None:
    a, b = EpochSampler(50, seed=3), EpochSampler(50, seed=3)
    a.set_epoch(4)
    for _ in range(3):  # b has been iterated before: that changes nothing
        list(b)
    b.set_epoch(4)
    assert list(a) == list(b) and sorted(a) == list(range(50))
    b.set_epoch(5)
    assert list(a) != list(b)
    assert list(EpochSampler(50, seed=4)) != list(EpochSampler(50, seed=3))
    assert list(EpochSampler(7, seed=0, shuffle=False)) == list(range(7))


def test_ranks_split_an_epoch_as_distributed_sampler_does() -> None:
    n, world = 11, 4
    shares = []
    for rank in range(world):
        s = EpochSampler(n, seed=1, rank=rank, world=world)
        s.set_epoch(2)
        shares.append(list(s))
        ref = DistributedSampler(range(n), num_replicas=world, rank=rank, shuffle=False)
        assert len(s) == len(ref)
    assert all(len(share) == 3 for share in shares)
    flat = sorted(i for share in shares for i in share)
    assert set(flat) == set(range(n)) and len(flat) == 12  # one clip repeated to even the ranks out
    unshuffled = [list(EpochSampler(n, 0, rank=r, world=world, shuffle=False)) for r in range(world)]
    assert unshuffled == [list(DistributedSampler(range(n), num_replicas=world, rank=r, shuffle=False))
                          for r in range(world)]


@pytest.mark.slow
def test_device_batches_are_the_loaders_batches(tiny_root: object, cache_dir: object) -> None:
    ds = US8KDataset(tiny_root, range(1, 10), cache_dir=cache_dir, progress=False)
    sampler = EpochSampler(len(ds), seed=2)
    sampler.set_epoch(3)
    loader = make_loader(ds, 16, device=torch.device("cpu"), sampler=sampler)
    device = DeviceBatches(ds, 16, device=torch.device("cpu"), sampler=sampler)
    pairs = list(zip(loader, device, strict=True))
    assert len(pairs) == len(loader) == len(device) == 6  # 90 clips: five of 16 and one of 10
    for (xa, ya), (xb, yb) in pairs:
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    # in dataset order when there is no sampler, and only the items asked for
    some = DeviceBatches(ds, 4, device=torch.device("cpu"), indices=[5, 0, 7])
    (x, y), = list(some)
    assert torch.equal(x[:, 0], torch.stack([ds[i][0][0] for i in (5, 0, 7)]))
    assert y.tolist() == [ds[i][1] for i in (5, 0, 7)]
    assert resident_waveforms(ds.cache, torch.device("cpu")) is device.waveforms  # copied once


def test_the_device_copy_is_used_where_it_fits(monkeypatch: pytest.MonkeyPatch) -> None:
    cuda, gb = torch.device("cuda", 0), 10**9
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (100 * gb, 140 * gb))
    fits = choose_data_path("auto", cuda, int(1.12 * gb))
    assert fits.kind == "device" and "1.12 GB" in fits.reason
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (4 * gb, 8 * gb))
    full = choose_data_path("auto", cuda, int(1.12 * gb))  # 1.12 > 25 % of 4 GB
    assert full.kind == "loader" and f"{DEVICE_FRACTION:.0%}" in full.reason and "4.0 GB" in full.reason
    assert choose_data_path("auto", torch.device("cpu"), gb).kind == "loader"
    assert choose_data_path("device", torch.device("cpu"), gb).kind == "device"
    with pytest.raises(ValueError, match="data must be one of"):
        choose_data_path("ram", torch.device("cpu"), gb)


@pytest.mark.slow
def test_workers_and_the_device_copy_give_bit_identical_weights(tiny_root: object, cache_dir: object) -> None:
    kwargs = dict(cache_dir=cache_dir, progress=False, verbose=False)
    plain = fit(TrainConfig(**SMALL, workers=0, data="loader"), tiny_root, **kwargs)
    workers = fit(TrainConfig(**SMALL, workers=2, data="loader"), tiny_root, **kwargs)
    resident = fit(TrainConfig(**SMALL, data="device"), tiny_root, **kwargs)
    assert (plain.data_path, resident.data_path) == ("loader", "device")
    _assert_identical(_weights(plain), _weights(workers))
    _assert_identical(_weights(plain), _weights(resident))
    for other in (workers, resident):
        assert list(other.history["test_acc"]) == list(plain.history["test_acc"])
        assert list(other.history["train_loss"]) == list(plain.history["train_loss"])


@pytest.mark.slow
def test_the_device_copy_gives_the_loaders_weights_with_augmentation(tiny_root: object, cache_dir: object) -> None:
    kwargs = dict(cache_dir=cache_dir, progress=False, verbose=False)
    strong = dict(aug_shift=1.0, aug_speed=0.1, aug_mask=0.2, aug_noise=0.5, aug_mixup=0.2)
    a = fit(TrainConfig(**{**SMALL, "epochs": 2}, **strong, data="loader"), tiny_root, **kwargs)
    b = fit(TrainConfig(**{**SMALL, "epochs": 2}, **strong, data="device"), tiny_root, **kwargs)
    _assert_identical(_weights(a), _weights(b))


@pytest.mark.slow
def test_a_run_resumed_with_workers_ends_as_the_uninterrupted_one(tiny_root: object, cache_dir: object,
                                                                  tmp_path: object) -> None:
    config = TrainConfig(**SMALL, workers=2)
    kwargs = dict(cache_dir=cache_dir, progress=False, verbose=False)
    whole = fit(config, tiny_root, tmp_path / "whole", **kwargs)

    def stop(row: dict) -> None:
        if row["epoch"] == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fit(config, tiny_root, tmp_path / "cut", callback=stop, **kwargs)
    resumed = fit(None, tiny_root, tmp_path / "cut", resume=True, **kwargs)
    _assert_identical(_weights(whole), _weights(resumed))
    # and resuming with another worker count is allowed: it does not change the numbers
    with pytest.raises(KeyboardInterrupt):
        fit(config, tiny_root, tmp_path / "cut0", callback=stop, **kwargs)
    import dataclasses

    other = fit(dataclasses.replace(config, workers=0), tiny_root, tmp_path / "cut0", resume=True, **kwargs)
    _assert_identical(_weights(whole), _weights(other))


@pytest.mark.slow
def test_a_compiled_model_trains_to_the_same_weights(tiny_root: object, cache_dir: object,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """compile=True goes through torch.compile (dynamo and AOT autograd; the "aot_eager" backend
    here, because inductor's C++ compile takes minutes on a 2-core CPU): same graph, same weights."""
    from us8k_lib.engine import parts as training_setup

    monkeypatch.setattr(training_setup, "COMPILE_BACKEND", "aot_eager")
    kwargs = dict(cache_dir=cache_dir, progress=False, verbose=False)
    calls = []
    real = torch.compile

    def counted(model: torch.nn.Module, **kw: object) -> object:
        calls.append(kw)
        return real(model, **kw)

    monkeypatch.setattr(torch, "compile", counted)
    config = TrainConfig(**{**SMALL, "epochs": 2})
    plain = fit(config, tiny_root, **kwargs)
    compiled = fit(TrainConfig(**{**SMALL, "epochs": 2}, compile=True), tiny_root, **kwargs)
    assert calls == [{"backend": "aot_eager"}]
    _assert_identical(_weights(plain), _weights(compiled))
    assert list(compiled.history["test_acc"]) == list(plain.history["test_acc"])
