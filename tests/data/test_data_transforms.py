"""Augmentations: image and label stay aligned, all symmetries occur, spectral shifts keep length, seeds repeat."""

from __future__ import annotations

import pytest
import torch

from dunemap.data.transforms import (
    AUGMENTATIONS,
    Compose,
    NoAugment,
    RandomFlipRotate,
    RandomRescale,
    RandomSpectralShift,
    build_augmentation,
)
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
    assert sorted(AUGMENTATIONS) == ["flip_rot90", "flip_rot90_spectral", "flip_rot90_spectral_rescale", "none",
                                     "spectral"]
    assert isinstance(build_augmentation("spectral"), RandomSpectralShift)  # keeps the orientation of the tile
    assert isinstance(build_augmentation("flip_rot90"), RandomFlipRotate)
    combo = build_augmentation("flip_rot90_spectral")
    assert isinstance(combo, Compose)
    assert [type(t) for t in combo.transforms] == [RandomFlipRotate, RandomSpectralShift]
    zoom = build_augmentation("flip_rot90_spectral_rescale")
    assert [type(t) for t in zoom.transforms] == [RandomRescale, RandomFlipRotate, RandomSpectralShift]
    none = build_augmentation("none")
    assert isinstance(none, NoAugment)
    image, label = _pair(3, 4)
    x, y = none(image, label)
    assert x is image and y is label
    valid = "flip_rot90, flip_rot90_spectral, flip_rot90_spectral_rescale, none"
    with pytest.raises(ConfigError, match=f"unknown augmentation 'rot'; valid: {valid}"):
        build_augmentation("rot")
    with pytest.raises(InputError, match=r"image \(3, 4, 4\) and label \(4, 5\) differ"):
        RandomFlipRotate()(torch.zeros(3, 4, 4), torch.zeros(4, 5, dtype=torch.long))


def _unit_tile(c: int, h: int, w: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A (C, H, W) tile of random unit vectors with a nodata (all-zero) first row; label marks each pixel."""
    g = torch.Generator().manual_seed(seed)
    image = torch.randn((c, h, w), generator=g)
    image = image / image.norm(dim=0, keepdim=True)
    image[:, 0, :] = 0.0
    label = torch.arange(h * w).reshape(h, w) % 10
    label[0, :] = 255
    return image, label


def test_spectral_shift_keeps_unit_length_nodata_and_stays_near_identity() -> None:
    image, label = _unit_tile(64, 6, 7, seed=0)
    torch.manual_seed(0)
    x, y = RandomSpectralShift(angle=0.2, offset=0.15)(image, label)
    assert x.shape == image.shape and x.dtype == image.dtype and x.is_contiguous()
    assert torch.equal(y, label)
    norms = x.norm(dim=0)
    assert torch.equal(x[:, 0, :], torch.zeros(64, 7))  # nodata stays nodata
    torch.testing.assert_close(norms[1:], torch.ones(5, 7))
    cos = (x[:, 1:] * image[:, 1:]).sum(0)
    assert 0.9 < cos.min() and cos.max() < 0.999  # moved, but not far
    # The rotation alone is one orthogonal map for the whole tile: inner products between pixels are kept.
    a = image[:, 1:].reshape(64, -1)
    r = RandomSpectralShift(angle=0.2, offset=0.0)(image, label)[0][:, 1:].reshape(64, -1)
    torch.testing.assert_close(r.T @ r, a.T @ a, atol=1e-5, rtol=0)
    assert not torch.allclose(r, a, atol=1e-3)
    # The offset is shared too: it pulls the tile's vectors together a little.
    b = x[:, 1:].reshape(64, -1)
    assert (b.T @ b).mean() > (a.T @ a).mean() + 0.005
    x0, _ = RandomSpectralShift(angle=0.0, offset=0.0)(image, label)
    torch.testing.assert_close(x0, image)


def test_spectral_augmentation_keeps_alignment_and_repeats_under_a_seed() -> None:
    image, label = _unit_tile(16, 5, 5, seed=1)
    ids = torch.arange(25, dtype=torch.float32).reshape(5, 5)
    aug = build_augmentation("flip_rot90_spectral")
    torch.manual_seed(3)
    seen = set()
    for _ in range(30):
        x, y = aug(image, label)
        # Find where each output pixel came from: the label moved with exactly the same permutation.
        moved = [t for t in _dihedral(ids, square=True) if torch.equal(y, _dihedral_label(label, ids, t))]
        assert moved, "label is not a flip/rotation of the input label"
        src = moved[0].long().flatten()
        x_flat, img_flat = x.reshape(16, -1), image.reshape(16, -1)
        valid = img_flat[:, src].norm(dim=0) > 0
        cos = (x_flat * img_flat[:, src]).sum(0)
        assert (cos[valid] > 0.8).all()  # each output pixel is its own source pixel, shifted slightly
        assert torch.equal(x_flat[:, ~valid], torch.zeros(16, int((~valid).sum())))
        seen.add(tuple(x.flatten().tolist()))
    assert len(seen) == 30  # a new spectral shift for every tile

    def run(seed: int) -> list[torch.Tensor]:
        torch.manual_seed(seed)
        return [aug(image, label)[0] for _ in range(5)]

    assert all(torch.equal(p, q) for p, q in zip(run(5), run(5)))
    assert not all(torch.equal(p, q) for p, q in zip(run(5), run(6)))
    g1, g2 = torch.Generator().manual_seed(9), torch.Generator().manual_seed(9)
    torch.manual_seed(0)
    s1 = RandomSpectralShift(generator=g1)(image, label)[0]
    torch.manual_seed(1)  # ignored when a generator is given
    s2 = RandomSpectralShift(generator=g2)(image, label)[0]
    assert torch.equal(s1, s2)


def _dihedral_label(label: torch.Tensor, ids: torch.Tensor, moved_ids: torch.Tensor) -> torch.Tensor:
    """The label rearranged the way ``moved_ids`` rearranges ``ids``."""
    return label.flatten()[moved_ids.long().flatten()].reshape(label.shape)


@pytest.mark.parametrize(("kw", "match"), [({"angle": -0.1}, "angle=-0.1"), ({"offset": float("nan")}, "offset=nan")])
def test_spectral_shift_rejects_bad_strengths(kw: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        RandomSpectralShift(**kw)
    with pytest.raises(InputError, match=r"image of shape \(4, 4\); expected \(C, H, W\)"):
        RandomSpectralShift()(torch.zeros(4, 4), torch.zeros(4, 4, dtype=torch.long))


def _stripes(c: int, h: int, w: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Vertical stripes ``width`` px wide: label = stripe index mod c, image = the one-hot unit vector of that label."""
    label = (torch.arange(w) // width % c).expand(h, w).clone()
    image = torch.nn.functional.one_hot(label, c).permute(2, 0, 1).float()
    return image, label


def _runs(row: torch.Tensor) -> list[int]:
    """Lengths of the runs of equal values in a 1-D tensor."""
    return torch.unique_consecutive(row, return_counts=True)[1].tolist()


@pytest.mark.parametrize("scale", [0.75, 1.3])
def test_rescale_zooms_image_and_label_together(scale: float) -> None:
    image, label = _stripes(4, 64, 64, width=8)
    x, y = RandomRescale(scale, scale)(image, label)
    assert x.shape == image.shape and y.shape == label.shape and x.dtype == image.dtype and y.dtype == label.dtype
    kept = y != 255
    # Image and label still agree: each labelled pixel's vector points at its own label.
    agree = (x.argmax(0) == y)[kept].float().mean()
    assert agree > 0.97
    # Stripes are scale times as wide (the inner runs of a row: the outer ones may be cut by the crop).
    inner = _runs(y[y.shape[0] // 2][kept[y.shape[0] // 2]])[1:-1]
    assert inner and all(abs(n - 8 * scale) <= 1 for n in inner)
    norms = x.norm(dim=0)
    if scale < 1:
        # Zoom-out: the 48 x 48 zoomed tile sits somewhere inside zero vectors labelled 255.
        assert int(kept.sum()) == 48 * 48
        assert torch.equal(norms[~kept], torch.zeros(int((~kept).sum())))
        rows, cols = kept.any(1).nonzero(), kept.any(0).nonzero()
        assert int(rows[-1] - rows[0]) + 1 == 48 and int(cols[-1] - cols[0]) + 1 == 48
    else:
        assert bool(kept.all())
    # Resampled vectors get their neighbourhood's length back: unit vectors stay unit.
    torch.testing.assert_close(norms[kept], torch.ones(int(kept.sum())), atol=1e-5, rtol=0)


def test_rescale_keeps_nodata_and_repeats_under_a_seed() -> None:
    image, label = _unit_tile(8, 40, 40, seed=2)  # row 0 is nodata labelled 255
    aug = RandomRescale(0.8, 1.25)

    def run(seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        torch.manual_seed(seed)
        return [aug(image, label) for _ in range(6)]

    a, b = run(5), run(5)
    assert all(torch.equal(xa, xb) and torch.equal(ya, yb) for (xa, ya), (xb, yb) in zip(a, b, strict=True))
    assert len({tuple(y.flatten().tolist()) for _, y in a}) > 1  # a new zoom per tile
    for x, y in a:
        nodata = x.norm(dim=0) == 0
        assert torch.equal(y[nodata] == 255, torch.ones(int(nodata.sum()), dtype=torch.bool))  # nodata is never a class
        assert bool(torch.isfinite(x).all())
    # One call draws three numbers whatever the zoom, so the stream does not depend on the range.
    torch.manual_seed(0)
    RandomRescale(1.0, 1.0)(image, label)
    after_identity = torch.rand(())
    torch.manual_seed(0)
    RandomRescale(0.5, 2.0)(image, label)
    assert torch.equal(torch.rand(()), after_identity)
    x, y = RandomRescale(1.0, 1.0)(image, label)
    assert x is image and y is label


def test_rescale_rejects_bad_ranges_and_shapes() -> None:
    for lo, hi in ((1.5, 1.2), (0.1, 1.0), (1.0, 5.0), (1.0, float("nan"))):
        with pytest.raises(ConfigError, match="rescale range"):
            RandomRescale(lo, hi)
    with pytest.raises(InputError, match=r"image \(3, 4, 4\) and label \(4, 5\)"):
        RandomRescale()(torch.zeros(3, 4, 4), torch.zeros(4, 5, dtype=torch.long))


@pytest.mark.parametrize("scale", [0.97, 0.987, 1.013])
def test_rescale_keeps_the_shape_of_a_tile_that_is_not_square(scale: float) -> None:
    # At these zooms one axis rounds back to its old length and the other does not: each axis is cropped or
    # padded on its own.
    image, label = _stripes(4, 37, 41, width=8)
    x, y = RandomRescale(scale, scale)(image, label)
    assert x.shape == image.shape and y.shape == label.shape
    nh, nw = round(37 * scale), round(41 * scale)
    assert int((y != 255).sum()) == min(nh, 37) * min(nw, 41)
    kept = y != 255
    assert ((x.argmax(0) == y)[kept].float().mean()) > 0.97
    assert torch.equal(x.norm(dim=0)[~kept], torch.zeros(int((~kept).sum())))
