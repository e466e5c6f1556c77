"""Joint flip/rotate augmentation: image and label stay aligned, all symmetries occur, seeds repeat."""

from __future__ import annotations

import pytest
import torch

from dunemap.data.transforms import AUGMENTATIONS, NoAugment, RandomFlipRotate, build_augmentation
from dunemap.errors import ConfigError, InputError


def _pair(h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Image whose band 0 holds each pixel's id (band 1 its negation); label = id mod 7."""
    ids = torch.arange(h * w, dtype=torch.float32).reshape(h, w)
    image = torch.stack([ids, -ids, torch.zeros(h, w)])
    return image, (ids.long() % 7)


def _dihedral(t: torch.Tensor, square: bool) -> list[torch.Tensor]:
    """All flips/rotations of a (..., H, W) tensor that keep its shape."""
    ks = range(4) if square else (0, 2)
    out = []
    for base in (t, t.flip(-1)):
        out += [torch.rot90(base, k, dims=(-2, -1)) for k in ks]
    return out


@pytest.mark.parametrize(("h", "w"), [(5, 5), (4, 6)])
def test_label_stays_aligned_with_image(h: int, w: int) -> None:
    image, label = _pair(h, w)
    aug = RandomFlipRotate()
    torch.manual_seed(0)
    for _ in range(40):
        x, y = aug(image, label)
        assert x.shape == image.shape and y.shape == label.shape and y.dtype == label.dtype
        assert torch.equal(y, x[0].long() % 7)  # label still matches the pixel it belongs to
        assert torch.equal(x[1], -x[0])  # bands moved together
        assert x.is_contiguous() and y.is_contiguous()


@pytest.mark.parametrize(("h", "w", "n"), [(5, 5, 8), (4, 6, 4)])
def test_reaches_every_shape_keeping_symmetry(h: int, w: int, n: int) -> None:
    image, label = _pair(h, w)
    candidates = _dihedral(image, square=h == w)
    assert len({tuple(c.flatten().tolist()) for c in candidates}) == n
    aug = RandomFlipRotate()
    torch.manual_seed(1)
    seen = set()
    for _ in range(200):
        x, _ = aug(image, label)
        match = [i for i, c in enumerate(candidates) if torch.equal(x, c)]
        assert match, "output is not a flip/rotation of the input"
        seen.add(tuple(x.flatten().tolist()))
    assert len(seen) == n


def test_deterministic_under_seed_and_generator() -> None:
    image, label = _pair(6, 6)
    aug = RandomFlipRotate()

    def run() -> list[torch.Tensor]:
        return [aug(image, label)[0] for _ in range(10)]

    torch.manual_seed(123)
    first = run()
    torch.manual_seed(123)
    second = run()
    assert all(torch.equal(a, b) for a, b in zip(first, second))
    assert len({tuple(t.flatten().tolist()) for t in first}) > 1

    g1, g2 = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    a1, a2 = RandomFlipRotate(generator=g1), RandomFlipRotate(generator=g2)
    torch.manual_seed(0)
    out1 = [a1(image, label)[0] for _ in range(10)]
    torch.manual_seed(999)  # the global RNG does not matter when a generator is given
    out2 = [a2(image, label)[0] for _ in range(10)]
    assert all(torch.equal(a, b) for a, b in zip(out1, out2))


def test_disabled_operations() -> None:
    image, label = _pair(5, 5)
    aug = RandomFlipRotate(hflip=False, vflip=False, rotate=False)
    torch.manual_seed(0)
    for _ in range(10):
        x, y = aug(image, label)
        assert torch.equal(x, image) and torch.equal(y, label)


def test_registry_and_errors() -> None:
    assert sorted(AUGMENTATIONS) == ["flip_rot90", "none"]
    assert isinstance(build_augmentation("flip_rot90"), RandomFlipRotate)
    none = build_augmentation("none")
    assert isinstance(none, NoAugment)
    image, label = _pair(3, 4)
    x, y = none(image, label)
    assert x is image and y is label
    with pytest.raises(ConfigError, match="unknown augmentation 'rot'; valid: flip_rot90, none"):
        build_augmentation("rot")
    with pytest.raises(InputError, match=r"image \(3, 4, 4\) and label \(4, 5\) differ"):
        RandomFlipRotate()(torch.zeros(3, 4, 4), torch.zeros(4, 5, dtype=torch.long))
