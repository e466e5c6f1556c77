"""Joint image/label augmentations for training tiles, chosen by name from ``AUGMENTATIONS``.

Each transform takes and returns ``(image (C, H, W), label (H, W))`` tensors and draws its randomness
from torch's RNG (or a given ``torch.Generator``), so ``torch.manual_seed`` makes it repeatable.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from dunemap.errors import ConfigError, InputError
from dunemap.registry import choose

Transform = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


class NoAugment:
    """The identity transform: returns the pair unchanged."""

    def __call__(self, image: torch.Tensor, label: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return image, label

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class RandomFlipRotate:
    """Random horizontal flip, vertical flip and rotation by k * 90 degrees, applied identically to image and label.

    Each flip happens with probability ``p_flip``; k is uniform over {0, 1, 2, 3} for square tiles and
    over {0, 2} for non-square ones (a quarter turn would swap height and width). Together they reach
    all eight symmetries of the square. Dune orientation relative to north is itself informative, so
    callers that want to keep it can disable rotation with ``rotate=False``.

    Args:
        hflip: allow horizontal (left-right) flips.
        vflip: allow vertical (top-bottom) flips.
        rotate: allow rotations by multiples of 90 degrees.
        p_flip: probability of each enabled flip.
        generator: the torch RNG to draw from; None uses the global one.
    """

    def __init__(
        self,
        hflip: bool = True,
        vflip: bool = True,
        rotate: bool = True,
        p_flip: float = 0.5,
        generator: torch.Generator | None = None,
    ) -> None:
        self.hflip = hflip
        self.vflip = vflip
        self.rotate = rotate
        self.p_flip = p_flip
        self.generator = generator

    def _coin(self) -> bool:
        return bool(torch.rand((), generator=self.generator).item() < self.p_flip)

    def __call__(self, image: torch.Tensor, label: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if image.shape[-2:] != label.shape[-2:]:
            raise InputError(f"image {tuple(image.shape)} and label {tuple(label.shape)} differ in height/width")
        # Draw every random number even when an operation is disabled, so the stream does not depend on options.
        do_h, do_v = self._coin(), self._coin()
        square = image.shape[-1] == image.shape[-2]
        k = int(torch.randint(0, 4 if square else 2, (), generator=self.generator).item())
        if not square:
            k *= 2  # {0, 1} -> {0, 2}: half turns only
        if self.hflip and do_h:
            image, label = image.flip(-1), label.flip(-1)
        if self.vflip and do_v:
            image, label = image.flip(-2), label.flip(-2)
        if self.rotate and k:
            image, label = torch.rot90(image, k, dims=(-2, -1)), torch.rot90(label, k, dims=(-2, -1))
        return image.contiguous(), label.contiguous()

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(hflip={self.hflip}, vflip={self.vflip}, rotate={self.rotate}, p_flip={self.p_flip})"
        )


class RandomSpectralShift:
    """Per-tile random rotation of the embedding space near identity plus a constant offset, then the old length again.

    Every valid pixel vector ``v`` of a tile becomes ``|v| * normalise(R @ v + |v| b)`` (unit vectors for
    AEF): ``R = exp(A)`` is a random rotation whose generator ``A`` is skew-symmetric with Gaussian
    entries scaled so that a unit vector turns by about ``angle`` radians, and ``b`` is a Gaussian
    offset of length about ``offset``, both shared by the whole tile. It imitates the modest regional shift of real
    embeddings (sand colour, vegetation, climate), so a network must rely on spatial pattern more
    than on exact per-pixel values. Pixels whose vector is all zero (AEF nodata) stay zero; the label
    is returned unchanged. Each call draws exactly one ``(C, C)`` and one ``(C,)`` Gaussian sample.

    Args:
        angle: typical rotation of a pixel vector, radians (0 disables the rotation).
        offset: typical length of the offset added before re-normalising (0 disables it).
        generator: the torch RNG to draw from; None uses the global one.
    """

    def __init__(self, angle: float = 0.2, offset: float = 0.15, generator: torch.Generator | None = None) -> None:
        for name, value in (("angle", angle), ("offset", offset)):
            if not (math.isfinite(value) and 0.0 <= value <= 1.0):
                raise ConfigError(f"spectral shift {name}={value}; expected a number in [0, 1]")
        self.angle = angle
        self.offset = offset
        self.generator = generator

    def __call__(self, image: torch.Tensor, label: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if image.dim() != 3:
            raise InputError(f"image of shape {tuple(image.shape)}; expected (C, H, W)")
        c = image.shape[0]
        g = torch.randn((c, c), generator=self.generator, dtype=torch.float64)
        b = torch.randn((c,), generator=self.generator, dtype=torch.float64)
        if c < 2:
            return image, label
        # Skew-symmetric generator with N(0, s^2) entries: |A v| is about s * sqrt(C - 1) for a unit v.
        skew = (g - g.T) * (self.angle / math.sqrt(2.0 * (c - 1)))
        rot = torch.linalg.matrix_exp(skew).to(image.dtype)  # (C, C) orthogonal
        shift = (b * (self.offset / math.sqrt(c))).to(image.dtype)  # (C,)
        flat = image.reshape(c, -1)  # (C, H*W)
        norm = flat.square().sum(0, keepdim=True).sqrt_()  # (1, H*W); a column reduction, not linalg's strided norm
        # The offset scales with the vector, so it stays relative: u = R v + |v| b.
        out = torch.addmm(shift[:, None] * norm, rot, flat)
        # |u|^2 = |v|^2 (1 + |b|^2) + 2 |v| (R^T b) . v since R is orthogonal: one mat-vec instead of a second norm.
        length2 = norm * norm * (1.0 + shift.square().sum()) + 2.0 * norm * ((rot.T @ shift) @ flat)
        out *= norm / length2.clamp_min(1e-24).sqrt_()  # back to |v|; nodata (|v| = 0) stays exactly zero
        return out.reshape(image.shape), label

    def __repr__(self) -> str:
        return f"{type(self).__name__}(angle={self.angle}, offset={self.offset})"


def _overlap(zoomed: int, size: int, r: float) -> tuple[slice, slice]:
    """Source and destination slices along one axis when a zoomed length goes back to ``size``.

    The offset is uniform over the room between the two lengths (``r`` in [0, 1)): a longer axis is
    cropped at it, a shorter one is placed at it (the rest stays padding).
    """
    room = abs(zoomed - size)
    off = min(int(r * (room + 1)), room)
    if zoomed >= size:
        return slice(off, off + size), slice(0, size)
    return slice(0, zoomed), slice(off, off + zoomed)


class RandomRescale:
    """Per-tile random zoom of image and label, then a random crop or a pad back to the tile's size.

    The zoom factor ``s`` is log-uniform in ``[min_scale, max_scale]``: a landform whose crests lie
    ``d`` px apart appears ``s * d`` px apart, imitating the scene-to-scene spread of dune size and
    spacing. The image is resampled bilinearly (antialiased when shrinking) and every pixel vector is
    given back the resampled length of the vectors around it, so unit AEF vectors stay unit; the label
    is resampled by nearest neighbour. Along each axis, zoom-in keeps a random window of the tile's
    size and zoom-out places the shorter tile at a random offset, padded with zero vectors (nodata)
    labelled 255 (ignored by the loss). Pixels nearest to a nodata pixel become nodata. An AEF vector encodes its
    own context at a fixed 10 m scale, so a zoomed raster is not the embedding of a larger landscape;
    the benefit is measured in ``docs/quality.md``, not assumed. Each call draws exactly three uniform
    numbers (scale and two offsets).

    Args:
        min_scale: smallest zoom factor, at least 0.25.
        max_scale: largest zoom factor, at most 4 (equal to ``min_scale`` for a fixed zoom).
        generator: the torch RNG to draw from; None uses the global one.
    """

    def __init__(self, min_scale: float = 0.75, max_scale: float = 1.33,
                 generator: torch.Generator | None = None) -> None:
        if not (math.isfinite(min_scale) and math.isfinite(max_scale) and 0.25 <= min_scale <= max_scale <= 4.0):
            raise ConfigError(f"rescale range [{min_scale}, {max_scale}]; expected 0.25 <= min <= max <= 4")
        self.min_scale = min_scale
        self.max_scale = max_scale
        self.generator = generator

    def __call__(self, image: torch.Tensor, label: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if image.dim() != 3 or image.shape[-2:] != label.shape[-2:]:
            raise InputError(f"image {tuple(image.shape)} and label {tuple(label.shape)}; "
                             "expected (C, H, W) and (H, W)")
        u = torch.rand((3,), generator=self.generator, dtype=torch.float64)
        scale = math.exp(math.log(self.min_scale) + float(u[0]) * math.log(self.max_scale / self.min_scale))
        h, w = image.shape[-2:]
        nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
        if (nh, nw) == (h, w):
            return image, label
        norm = image.square().sum(0, keepdim=True).sqrt()  # (1, H, W)
        stack = torch.cat([image, norm])[None]
        out = F.interpolate(stack, size=(nh, nw), mode="bilinear", align_corners=False, antialias=scale < 1)[0]
        valid = F.interpolate((norm > 0).to(image.dtype)[None], size=(nh, nw), mode="nearest-exact")[0] > 0
        vec, length = out[:-1], out[-1:]
        vec = vec * (length / vec.square().sum(0, keepdim=True).sqrt().clamp_min(1e-12)) * valid
        lab = F.interpolate(label[None, None].to(torch.float32), size=(nh, nw), mode="nearest-exact")[0, 0]
        lab = lab.to(label.dtype)
        (src_r, dst_r), (src_c, dst_c) = _overlap(nh, h, float(u[1])), _overlap(nw, w, float(u[2]))
        img_out = image.new_zeros(image.shape)
        lab_out = torch.full_like(label, 255)
        img_out[:, dst_r, dst_c] = vec[:, src_r, src_c]
        lab_out[dst_r, dst_c] = lab[src_r, src_c]
        return img_out, lab_out

    def __repr__(self) -> str:
        return f"{type(self).__name__}(min_scale={self.min_scale}, max_scale={self.max_scale})"


class Compose:
    """Apply joint transforms one after another."""

    def __init__(self, transforms: Sequence[Transform]) -> None:
        self.transforms = list(transforms)

    def __call__(self, image: torch.Tensor, label: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        for t in self.transforms:
            image, label = t(image, label)
        return image, label

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.transforms!r})"


def flip_rot90_spectral() -> Compose:
    """Flips and quarter turns (:class:`RandomFlipRotate`) followed by :class:`RandomSpectralShift`."""
    return Compose([RandomFlipRotate(), RandomSpectralShift()])


def flip_rot90_spectral_rescale() -> Compose:
    """:class:`RandomRescale` (zoom 0.75 to 1.33) followed by :func:`flip_rot90_spectral`."""
    return Compose([RandomRescale(), RandomFlipRotate(), RandomSpectralShift()])


AUGMENTATIONS: dict[str, Callable[[], Transform]] = {
    "none": NoAugment,
    "flip_rot90": RandomFlipRotate,
    "flip_rot90_spectral": flip_rot90_spectral,
    "flip_rot90_spectral_rescale": flip_rot90_spectral_rescale,
    "spectral": RandomSpectralShift,
}
"""Augmentation factories by name; a CLI's ``--augment`` choices are these keys."""


def build_augmentation(name: str) -> Transform:
    """Build the augmentation registered as ``name``; a ConfigError lists the valid names."""
    return choose(AUGMENTATIONS, name, "augmentation")()
