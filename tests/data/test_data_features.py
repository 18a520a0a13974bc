"""The feature cache: identical tensors on reuse, recomputation when any key part changes, survival across processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from torchvision import transforms as T

from calprompt.data import (
    FeatureCache,
    FeatureKey,
    ImageTransformConfig,
    Item,
    ItemDataset,
    build_test_transform,
    build_train_transform,
    encode_items,
    item_ids,
)
from calprompt.data.features import cached_or_computed

REPO = Path(__file__).resolve().parents[2]
CONFIG = ImageTransformConfig(image_size=8, train_scale=(0.2, 1.0))


def make_items(folder: Path, count: int = 5) -> list[Item]:
    generator = torch.Generator().manual_seed(0)
    items = []
    for index in range(count):
        pixels = torch.randint(0, 256, (14, 16, 3), generator=generator, dtype=torch.uint8).numpy()
        path = folder / f"img_{index}.png"
        Image.fromarray(pixels).save(path)
        items.append(Item(str(path), index % 3, f"class {index % 3}"))
    return items


def encoder(images: torch.Tensor) -> torch.Tensor:
    """A fixed linear 'image encoder': (B, 3, 8, 8) -> (B, 6)."""
    weight = torch.linspace(-1, 1, 3 * 8 * 8 * 6).reshape(3 * 8 * 8, 6)
    return images.flatten(1) @ weight


class Counter:
    def __init__(self, value: torch.Tensor):
        self.value, self.calls = value, 0

    def __call__(self) -> torch.Tensor:
        self.calls += 1
        return self.value


def make_key(items, **changes) -> FeatureKey:
    key = FeatureKey(
        encoder_id="ViT-B-16/openai",
        dataset="oxford_pets",
        split="train",
        item_ids=item_ids(items),
        transform_id=CONFIG.identity(train=True),
        view_seed=7,
    )
    return replace(key, **changes)


def test_reuse_returns_identical_tensor_without_recomputing(tmp_path):
    items = make_items(tmp_path)
    features = torch.randn(5, 6)
    compute = Counter(features)
    cache = FeatureCache(tmp_path / "cache")
    first = cache.get_or_compute(make_key(items), compute)
    second = cache.get_or_compute(make_key(items), compute)
    assert compute.calls == 1
    assert torch.equal(first, features) and torch.equal(second, features)
    assert second.dtype == torch.float32 and second.shape == (5, 6)
    # A new cache object on the same folder (what a restarted process sees) finds it too.
    assert torch.equal(FeatureCache(tmp_path / "cache").get_or_compute(make_key(items), compute), features)
    assert compute.calls == 1


@pytest.mark.parametrize(
    "change",
    [
        {"encoder_id": "ViT-B-32/openai"},
        {"view_seed": 8},
        {"view_seed": None},
        {"dataset": "dtd"},
        {"split": "test"},
        {"transform_id": CONFIG.identity(train=False)},
    ],
)
def test_changing_any_key_part_recomputes(tmp_path, change):
    items = make_items(tmp_path)
    cache = FeatureCache(tmp_path / "cache")
    original = Counter(torch.zeros(5, 6))
    cache.get_or_compute(make_key(items), original)
    other = Counter(torch.ones(5, 6))
    got = cache.get_or_compute(make_key(items, **change), other)
    assert other.calls == 1 and torch.equal(got, torch.ones(5, 6))
    # The original entry is intact.
    assert torch.equal(cache.get_or_compute(make_key(items), original), torch.zeros(5, 6))
    assert original.calls == 1


def test_changing_the_items_recomputes(tmp_path):
    items = make_items(tmp_path)
    cache = FeatureCache(tmp_path / "cache")
    cache.put(make_key(items), torch.zeros(5, 6))
    reordered = make_key(items[::-1])
    assert cache.get(reordered) is None
    assert cache.get(make_key(items[:4])) is None


def test_reuse_is_memory_mapped_copy_on_write(tmp_path):
    items = make_items(tmp_path)
    cache = FeatureCache(tmp_path / "cache")
    cache.put(make_key(items), torch.arange(30, dtype=torch.float32).reshape(5, 6))
    loaded = cache.get(make_key(items))
    array_path, _ = cache.paths(make_key(items))
    assert isinstance(np.load(array_path, mmap_mode="c"), np.memmap)
    loaded += 100  # callers may write to the tensor; the file must not change
    assert torch.equal(cache.get(make_key(items)), torch.arange(30, dtype=torch.float32).reshape(5, 6))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_dtypes_round_trip(tmp_path, dtype):
    items = make_items(tmp_path)
    cache = FeatureCache(tmp_path / "cache")
    features = torch.randn(5, 4).to(dtype)
    cache.put(make_key(items), features)
    loaded = FeatureCache(tmp_path / "cache").get(make_key(items))
    assert loaded.dtype == dtype and torch.equal(loaded, features)


def test_writes_leave_no_temporary_files_and_a_readable_sidecar(tmp_path):
    items = make_items(tmp_path)
    cache = FeatureCache(tmp_path / "cache")
    cache.put(make_key(items), torch.zeros(5, 2))
    files = sorted(path.name for path in (tmp_path / "cache").rglob("*") if path.is_file())
    digest = make_key(items).digest()
    assert files == [f"{digest}.json", f"{digest}.npy"]
    meta = json.loads(cache.paths(make_key(items))[1].read_text())
    assert meta["key"]["encoder_id"] == "ViT-B-16/openai" and meta["key"]["num_items"] == 5


def test_foreign_or_corrupt_entries_are_named(tmp_path):
    items = make_items(tmp_path)
    cache = FeatureCache(tmp_path / "cache")
    key = make_key(items)
    cache.put(key, torch.zeros(5, 2))
    _, meta_path = cache.paths(key)
    meta = json.loads(meta_path.read_text())
    meta["key"]["encoder_id"] = "something else"
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="does not belong to the requested key") as info:
        cache.get(key)
    assert str(meta_path) in str(info.value)


def test_corrupt_sidecar_is_named(tmp_path):
    items = make_items(tmp_path)
    cache = FeatureCache(tmp_path / "cache")
    cache.put(make_key(items), torch.zeros(5, 2))
    _, meta_path = cache.paths(make_key(items))
    meta_path.write_text('{"key": ')
    with pytest.raises(ValueError, match="is corrupt") as info:
        cache.get(make_key(items))
    assert str(meta_path) in str(info.value)


def test_put_rejects_wrong_row_count(tmp_path):
    items = make_items(tmp_path)
    with pytest.raises(ValueError, match="Expected `features` to be a tensor with 5 rows"):
        FeatureCache(tmp_path / "cache").put(make_key(items), torch.zeros(4, 2))


def test_encode_items_matches_a_plain_loop(tmp_path):
    items = make_items(tmp_path)
    mean, std = torch.tensor(CONFIG.mean)[:, None, None], torch.tensor(CONFIG.std)[:, None, None]

    def torchvision_view(item: Item) -> torch.Tensor:  # torchvision's tensor ops, one image at a time
        image = T.functional.pil_to_tensor(Image.open(item.impath).convert("RGB")).float() / 255
        image = T.functional.center_crop(T.functional.resize(image, 8, T.InterpolationMode.BICUBIC), 8)
        return (image - mean) / std

    want = torch.stack([encoder(torchvision_view(item)[None])[0] for item in items])
    got = encode_items(items, encoder, build_test_transform(CONFIG), batch_size=2)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)
    # Any other PIL transform runs per image, seeded per item exactly as `ItemDataset`.
    per_image = T.Compose(build_train_transform(CONFIG).transforms)
    seeded = encode_items(items, encoder, per_image, view_seed=3, batch_size=3)
    dataset = ItemDataset(items, per_image, view_seed=3)
    torch.testing.assert_close(seeded, torch.stack([encoder(dataset[i][0][None])[0] for i in range(5)]))


def test_item_ids_relative_to_root(tmp_path):
    items = make_items(tmp_path, count=2)
    assert item_ids(items, root=tmp_path) == ("img_0.png", "img_1.png")
    assert item_ids(items) == (items[0].impath, items[1].impath)


def test_cache_and_seeded_views_survive_a_process_restart(tmp_path):
    items = make_items(tmp_path)
    cache_dir = tmp_path / "cache"
    transform = build_train_transform(CONFIG)
    key = make_key(items)
    features = FeatureCache(cache_dir).get_or_compute(key, lambda: encode_items(items, encoder, transform, view_seed=7))
    script = textwrap.dedent(
        f"""
        from safetensors.torch import save_file
        from calprompt.data import FeatureCache, Item, build_train_transform, encode_items
        from tests.data.test_data_features import CONFIG, encoder, make_key
        from pathlib import Path

        # the same image files, untouched (rewriting them would change their stamps, hence the key)
        items = [Item(str(Path({str(tmp_path)!r}) / f"img_{{i}}.png"), i % 3, f"class {{i % 3}}") for i in range(5)]
        key = make_key(items)
        def refuse():
            raise AssertionError("the cache entry should have been found")
        cached = FeatureCache(Path({str(cache_dir)!r})).get_or_compute(key, refuse)
        fresh = encode_items(items, encoder, build_train_transform(CONFIG), view_seed=7)
        save_file({{"cached": cached.clone(), "fresh": fresh}}, {str(tmp_path / "out.safetensors")!r})
        """
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": os.pathsep.join((str(REPO / "src"), str(REPO)))}
    subprocess.run([sys.executable, "-c", script], check=True, cwd=tmp_path, env=env, timeout=300)
    result = load_file(tmp_path / "out.safetensors")
    assert torch.equal(result["cached"], features)
    # Another process drew byte-identical augmented views from the same view seed.
    assert torch.equal(result["fresh"], features)


def test_images_replaced_in_place_address_another_entry(tmp_path):
    """The key includes the image files' stamps: new pixels under the same names are never served old features."""
    items = make_items(tmp_path)
    cache = FeatureCache(tmp_path / "cache")
    before = make_key(items)
    cache.put(before, torch.zeros(5, 2))
    Image.fromarray(np.zeros((14, 16, 3), dtype=np.uint8)).save(items[2].impath)  # replaced in place
    after = make_key(items)
    assert after.item_ids == before.item_ids and after.digest() != before.digest()
    assert cache.get(after) is None


def test_edited_rows_are_refused_by_get_and_recomputed_by_get_or_compute(tmp_path):
    items = make_items(tmp_path)
    cache = FeatureCache(tmp_path / "cache")
    key = make_key(items)
    cache.put(key, torch.arange(10.0).reshape(5, 2))
    array_path, _ = cache.paths(key)
    edited = np.load(array_path)
    edited[3, 1] = 42.0  # a valid .npy whose rows changed
    np.save(array_path, edited)
    with pytest.raises(ValueError, match="checksum of its rows") as info:
        cache.get(key)
    assert str(array_path) in str(info.value)
    fresh = Counter(torch.arange(10.0).reshape(5, 2) + 1)
    with pytest.warns(UserWarning, match="Recomputing"):
        features = cache.get_or_compute(key, fresh)
    assert fresh.calls == 1 and torch.equal(features, fresh.value)
    assert torch.equal(cache.get(key), fresh.value)  # stored again, verified


def test_cached_or_computed_builds_no_key_without_a_cache_and_names_its_caller_on_a_corrupt_entry(tmp_path):
    """The one cache-or-compute step of training and evaluation: without a cache it neither builds a key (a stat per
    image) nor touches the disk; with one, a corrupt entry's warning points at the code asking for the features."""
    items = make_items(tmp_path)
    fresh = Counter(torch.arange(10.0).reshape(5, 2))

    def refuse() -> FeatureKey:
        raise AssertionError("a key was built without a cache")

    assert torch.equal(cached_or_computed(None, refuse, fresh), fresh.value) and fresh.calls == 1
    cache = FeatureCache(tmp_path / "cache")
    first = cached_or_computed(cache, lambda: make_key(items), fresh)
    assert torch.equal(cached_or_computed(cache, lambda: make_key(items), fresh), first) and fresh.calls == 2
    _, meta_path = cache.paths(make_key(items))
    meta_path.write_text("{not json", encoding="utf-8")
    with pytest.warns(UserWarning, match="Recomputing") as caught:
        assert torch.equal(cached_or_computed(cache, lambda: make_key(items), fresh), fresh.value)
    assert fresh.calls == 3 and [Path(w.filename).name for w in caught] == [Path(__file__).name]


def test_a_zero_byte_array_is_named(tmp_path):
    items = make_items(tmp_path)
    cache = FeatureCache(tmp_path / "cache")
    cache.put(make_key(items), torch.zeros(5, 2))
    array_path, _ = cache.paths(make_key(items))
    array_path.write_bytes(b"")
    with pytest.raises(ValueError, match="unreadable") as info:
        cache.get(make_key(items))
    assert str(array_path) in str(info.value)
