"""Joint image/label augmentations for training tiles, chosen by name from ``AUGMENTATIONS``.

Each transform takes and returns ``(image (C, H, W), label (H, W))`` tensors and draws its randomness
from torch's RNG (or a given ``torch.Generator``), so ``torch.manual_seed`` makes it repeatable.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from dunemap.errors import InputError
from dunemap.registry import choose


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


AUGMENTATIONS: dict[str, Callable[[], Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]]] = {
    "none": NoAugment,
    "flip_rot90": RandomFlipRotate,
}
"""Augmentation factories by name; a CLI's ``--augment`` choices are these keys."""


def build_augmentation(name: str) -> Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """Build the augmentation registered as ``name``; a ConfigError lists the valid names."""
    return choose(AUGMENTATIONS, name, "augmentation")()
