"""Issue 22: test-time views are TPT's (the test view, then seeded random crops with flips, AugMix on top) and are
reproducible per image: the same (seed, image) gives the same views whatever else is drawn, and nothing is drawn
from the global generator."""

from __future__ import annotations

import torch

from calprompt.data import ImageTransformConfig
from calprompt.data.augment import eval_matrices, normalize, resample
from calprompt.data.test_views import image_view_seed, tuning_views, uses_augmix

CONFIG = ImageTransformConfig(image_size=16, train_scale=(0.5, 1.0))


def image(seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (3, 20, 24), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def test_view_zero_is_the_test_view_and_the_rest_are_random_crops() -> None:
    views = tuning_views(image(), 6, image_view_seed(1, 0), CONFIG, augmix=False)
    rows, columns = eval_matrices(20, 24, 16, CONFIG.interpolation)
    expected = normalize(resample(image().unsqueeze(0), rows, columns), CONFIG.mean, CONFIG.std)
    torch.testing.assert_close(views[:1], expected, rtol=0, atol=0)
    assert views.shape == (6, 3, 16, 16)
    assert all(not torch.equal(views[0], views[j]) for j in range(1, 6))


def test_views_are_seeded_per_image_and_leave_the_global_generator_alone() -> None:
    for augmix in (False, True):
        state = torch.get_rng_state()
        tuning_views(image(), 5, image_view_seed(1, 3), CONFIG, augmix=augmix)
        assert torch.equal(torch.get_rng_state(), state)
        first = tuning_views(image(), 5, image_view_seed(1, 3), CONFIG, augmix=augmix)
        torch.randn(100)  # whatever else is drawn in between
        again = tuning_views(image(), 5, image_view_seed(1, 3), CONFIG, augmix=augmix)
        torch.testing.assert_close(first, again, rtol=0, atol=0)
        other = tuning_views(image(), 5, image_view_seed(1, 4), CONFIG, augmix=augmix)
        assert not torch.equal(first[1:], other[1:])
    plain = tuning_views(image(), 5, image_view_seed(1, 3), CONFIG, augmix=False)
    mixed = tuning_views(image(), 5, image_view_seed(1, 3), CONFIG, augmix=True)
    torch.testing.assert_close(plain[:1], mixed[:1], rtol=0, atol=0)  # AugMix never touches the test view
    assert not torch.allclose(plain[1:], mixed[1:])


def test_augmix_follows_tpt_set_ids() -> None:
    assert not uses_augmix("imagenet") and not uses_augmix("imagenet-a") and not uses_augmix("ImageNet_R")
    assert uses_augmix("dtd") and uses_augmix("toy") and uses_augmix("toy-domain")


def test_augmix_runs_on_one_thread_with_the_results_of_torchvisions_augmix_and_restores_the_threads() -> None:
    """The views' AugMix runs single-threaded (its tiny ops were ~19x slower with intra-op threads on a busy CPU):
    each crop is torchvision's AugMix of it under the seed (the oracle runs with the caller's threads), and the
    caller's thread count is back afterwards."""
    from torchvision.transforms import AugMix

    from calprompt.data.test_views import _augmix

    crops = torch.rand(5, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    threads = torch.get_num_threads()
    mixed = _augmix(crops, 7)
    assert torch.get_num_threads() == threads
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(7)
        mix = AugMix(severity=1, all_ops=False)
        expected = torch.stack([mix(c) for c in (crops * 255).round().to(torch.uint8)]).float() / 255.0
    torch.testing.assert_close(mixed, expected, rtol=0, atol=0)
