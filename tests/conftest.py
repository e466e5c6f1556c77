"""Shared fixtures: the repository's own test data, torch threads kept small, and a tiny learnable dataset."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter

from dunemap.data.seed_layout import write_sample
from dunemap.knowledge.catalog import load_catalog
from dunemap.models import create_model
from dunemap.models.checkpoint import save_checkpoint

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "fixtures"  # the only place test data is read from (see its README files)

torch.set_num_threads(min(2, os.cpu_count() or 1))
TORCH_THREADS = torch.get_num_threads()
# Commands the tests start as processes get the same count. Torch's own default is the number of physical cores,
# which is 1 on a machine whose 2 CPUs are one core's two threads: a run in a child would then round its sums
# differently from the same run in this process.
os.environ["OMP_NUM_THREADS"] = str(TORCH_THREADS)
# The suite's own cache folder (exports, auto's timings, text encodings), shared by the commands it starts: what a
# test finds there was left by this run, never by another run or the user's own maps.
os.environ["DUNEMAP_CACHE"] = tempfile.mkdtemp(prefix="dunemap-tests-cache-")
atexit.register(shutil.rmtree, os.environ["DUNEMAP_CACHE"], True)


@pytest.fixture(autouse=True)
def _torch_threads():
    """Every test starts with the same torch thread count: a command run in-process (``--threads 1``) changes it,
    and sums over another number of threads round differently, so a test's numbers would depend on the order."""
    torch.set_num_threads(TORCH_THREADS)
    yield


@dataclass(frozen=True)
class MadsFixture:
    """The published-layout checkpoint fixtures in ``tests/fixtures/mads`` (provenance in its README)."""

    dir: Path
    weights: Path  # a MiT-B0-sized fused state_dict in the published key layout, float16 tensors
    text: Path  # the seed's text embeddings, (10, 512)
    logits_every4: Path  # the published code's logits for the fixture input, every 4th row and column
    full_shapes: Path  # every key and shape of the full published model


def mads_fixture() -> MadsFixture:
    """The fixture files; a missing one fails loudly (it never skips a test)."""
    root = FIXTURES / "mads"
    found = MadsFixture(root, root / "tiny_b0_fusion_fp16.pth", root / "text_embeds_detailed.npy",
                        root / "tiny_logits_every4.npy", root / "full_state_dict_shapes.json")
    missing = [str(p) for p in vars(found).values() if not p.exists()]
    assert not missing, f"test fixtures missing from the repository: {missing}"
    return found


@pytest.fixture(scope="session")
def mads() -> MadsFixture:
    return mads_fixture()

BANDS = 16


def make_tile(rng: np.random.Generator, size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    field = gaussian_filter(rng.standard_normal((4, size, size)), (0, 6, 6))
    label = field.argmax(0).astype(np.uint8)  # smooth blobs of ids 0..3
    means = np.random.default_rng(123).standard_normal((4, BANDS))
    image = means[label].transpose(2, 0, 1) + 0.2 * rng.standard_normal((BANDS, size, size))
    image /= np.linalg.norm(image, axis=0, keepdims=True)
    return image.astype(np.float32), label


CATALOG = """\
version: 1
name: four-blobs
classes:
""" + "".join(
    f"  - {{id: {i}, name: blob_{i}, label: Blob {i}, color: [{40 * i}, 90, 200], description: Blob number {i}.}}\n"
    for i in range(4)
)


def write_dataset(root: Path, n_train: int = 16, n_val: int = 2, n_test: int = 2, seed: int = 0) -> Path:
    """Tiles of 4 classes plus ``catalog.yaml`` describing them."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    (root / "catalog.yaml").write_text(CATALOG)
    for split, n in (("train", n_train), ("val", n_val), ("test", n_test)):
        for i in range(n):
            image, label = make_tile(rng)
            write_sample(root, split, f"{split}_{i:02d}", image, label)
    return root


@pytest.fixture()
def tiny_dataset(tmp_path: Path) -> Path:
    """16 train, 2 val and 2 test tiles of 64x64 px, 16 bands, 4 classes, with their catalog."""
    return write_dataset(tmp_path / "data")


@pytest.fixture(scope="session")
def make_tiny_tile():
    """``make_tiny_tile(rng, size=64) -> (image (16, size, size) float32, label uint8)`` of the tiny dataset."""
    return make_tile


@pytest.fixture(scope="session")
def make_tiny_dataset():
    """The factory behind ``tiny_dataset``: ``make_tiny_dataset(root, n_train=..., n_val=..., n_test=...)``."""
    return write_dataset


@pytest.fixture(scope="session")
def local_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A mit_tiny whose output depends only on a small neighbourhood of each pixel.

    Self-attention outputs and the decoder's deeper-stage projections are zeroed, leaving the
    stage-1 convolutions (a receptive field of about 20 pixels), so a window's prediction of a pixel
    far from the window's edges equals a whole-raster pass: exactly what blending must preserve.
    The classifier is scaled up so classes are decided by clear margins.
    """
    torch.manual_seed(1)
    model = create_model("mit_tiny", num_classes=10, text_dim=32).eval()
    model.set_text(torch.nn.functional.normalize(torch.randn(10, 32), dim=1))
    zeroed = 0
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ".attn.proj." in name or any(name.startswith(f"decode_head.linear_layers.{i}.") for i in (1, 2, 3)):
                p.zero_()
                zeroed += 1
            if name == "decode_head.linear_pred.weight":
                p.mul_(20.0)
    assert zeroed >= 10, "parameter names changed: the local model fixture no longer isolates stage 1"
    catalog = load_catalog()
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "local.pth", model, list(catalog.names),
                           [tuple(c) for c in catalog.colors])
