"""Synthetic scenes: determinism, unit-length embeddings, label ids, georeferencing and landform geometry."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
from pyproj import Transformer

from dunemap.errors import ConfigError
from dunemap.regions import REGIONS
from dunemap.synth.fields import Window
from dunemap.synth.landforms import (
    BARCHANOID,
    CRESCENTIC,
    GROUND_SAND_MAX,
    LANDFORMS,
    LINEAR,
    SAND_SHEET_COVER,
    LandformStyle,
)
from dunemap.synth.presets import PRESETS
from dunemap.synth.scene import SceneConfig, generate_scene, ground_cover, scene_origins
from dunemap.synth.wind import Wind


@pytest.fixture(scope="module")
def holes_scene():
    return generate_scene(SceneConfig(size=(128, 160), region="qaidam", seed=4, nodata_holes=True, region_px=64))


def _projected_bbox(region):
    t = Transformer.from_crs("EPSG:4326", f"EPSG:{region.epsg}", always_xy=True)
    return t.transform_bounds(*region.bbox, densify_pts=21)


def test_same_seed_gives_byte_identical_arrays_and_another_seed_differs():
    cfg = SceneConfig(size=(96, 96), region="namib", seed=7, nodata_holes=True, region_px=48)
    a, b = generate_scene(cfg), generate_scene(cfg)
    for name in ("height", "label", "embedding", "valid"):
        assert getattr(a, name).tobytes() == getattr(b, name).tobytes(), name
    c = generate_scene(SceneConfig(size=(96, 96), region="namib", seed=8, nodata_holes=True, region_px=48))
    assert a.embedding.tobytes() != c.embedding.tobytes()


def test_another_embedding_seed_shows_the_same_ground_through_another_model():
    cfg = SceneConfig(size=(96, 96), region="namib", seed=7, region_px=48)
    a, b = generate_scene(cfg), generate_scene(replace(cfg, embedding_seed=cfg.embedding_seed + 1))
    assert a.label.tobytes() == b.label.tobytes() and a.height.tobytes() == b.height.tobytes()
    assert b.name == f"namib_7_e{cfg.embedding_seed + 1}" and a.name == "namib_7"
    np.testing.assert_allclose(np.linalg.norm(b.embedding, axis=0), 1.0, atol=1e-4)
    # another model, not a small perturbation: the same pixel's two vectors are nearly unrelated
    cosine = np.einsum("chw,chw->hw", a.embedding, b.embedding)
    assert abs(float(cosine.mean())) < 0.5


def test_embeddings_are_unit_length_on_valid_pixels_and_zero_elsewhere(holes_scene):
    s = holes_scene
    assert s.embedding.shape == (64, 128, 160) and s.embedding.dtype == np.float32
    norms = np.linalg.norm(s.embedding, axis=0)
    np.testing.assert_allclose(norms[s.valid], 1.0, atol=1e-4)
    assert (s.embedding[:, ~s.valid] == 0).all()
    assert 0.0 < (~s.valid).mean() < 0.2  # holes exist and stay holes, not the scene


def test_labels_are_class_ids_with_255_exactly_on_nodata(holes_scene):
    s = holes_scene
    assert s.label.dtype == np.uint8
    assert ((s.label == 255) == ~s.valid).all()
    assert set(np.unique(s.label[s.valid]).tolist()) <= set(range(10))


def test_layout_regions_are_contiguous_and_irregular():
    s = generate_scene(SceneConfig(size=(192, 192), region="namib", seed=2, region_px=80))
    from scipy import ndimage

    classes = np.unique(s.label)
    assert len(classes) >= 3
    # Few connected pieces per class (contiguous regions, not salt-and-pepper) ...
    pieces = sum(ndimage.label(s.label == c)[1] for c in classes)
    assert pieces <= 4 * len(classes) + 6
    # ... and boundaries that are not straight: boundary pixels far exceed a straight-edged partition's.
    edges = (s.label[:, 1:] != s.label[:, :-1]).sum() + (s.label[1:] != s.label[:-1]).sum()
    assert edges > 1.2 * 192 * (len(classes) - 1) / 2


@pytest.mark.parametrize("region", sorted(REGIONS))
def test_georeferencing_uses_the_region_utm_zone_and_lies_inside_its_bbox(region):
    s = generate_scene(SceneConfig(size=(32, 48), region=region, seed=0))
    r = REGIONS[region]
    assert s.crs == f"EPSG:{r.epsg}"
    t = s.transform
    assert (t.a, t.b, t.d, t.e) == (10.0, 0.0, 0.0, -10.0)
    minx, miny, maxx, maxy = _projected_bbox(r)
    assert minx < t.c < maxx and miny < t.f < maxy
    assert minx < t.c + 48 * 10 < maxx and miny < t.f - 32 * 10 < maxy


def test_scene_origins_tile_the_region_without_overlap():
    r = REGIONS["mojave"]
    origins = scene_origins(r, (256, 256), 5, gap_px=16)
    assert len(set(origins)) == 5
    for i, a in enumerate(origins):
        for b in origins[i + 1 :]:
            assert abs(a[0] - b[0]) >= 2720 or abs(a[1] - b[1]) >= 2720  # (256 + 16) px apart
    with pytest.raises(ConfigError, match="do not fit in region 'mojave'"):
        scene_origins(r, (4096, 4096), 100)


@pytest.mark.parametrize("bad, match", [
    (dict(region="sahara"), "unknown region 'sahara'; valid: atacama, mojave, namib, qaidam, yilgarn"),
    (dict(size=(8, 64)), "scene size 8x64 is too small"),
    (dict(hole_fraction=0.9), "hole fraction 0.9"),
    (dict(seed=-1), "seed -1"),
])
def test_bad_config_raises_one_line_config_error(bad, match):
    with pytest.raises(ConfigError, match=match) as info:
        generate_scene(SceneConfig(**bad))
    assert "\n" not in str(info.value)


def test_every_region_preset_exists_and_mixtures_cover_all_classes():
    assert set(PRESETS) == set(REGIONS)
    covered = set()
    for p in PRESETS.values():
        w = p.class_weights()
        assert len(w) == 10 and math.isclose(sum(w), 1.0)
        covered |= {c for c, x in enumerate(w) if x > 0}
    assert covered == set(range(10))


def _render(cls: int, toward: float, size: int = 192, seed: int = 0):
    wind = Wind(drift_deg=toward, variability=0.1, bimodality=0.0, divergence_deg=0.0)
    render = LANDFORMS[cls]((size, size), wind, LandformStyle(), np.random.default_rng(seed))
    return render(Window(0, 0, size, size)).height


def _downwind_slopes(height: np.ndarray, toward: float) -> tuple[np.ndarray, np.ndarray]:
    """Height change per pixel moving downwind, and moving crosswind."""
    gy, gx = np.gradient(height.astype(np.float64))  # per row (south), per column (east)
    t = math.radians(toward)
    along = gx * math.sin(t) - gy * math.cos(t)
    across = gx * math.cos(t) + gy * math.sin(t)
    return along, across


@pytest.mark.parametrize("toward", [30.0, 120.0])
def test_transverse_ridges_lie_across_the_wind_with_slip_faces_downwind(toward):
    h = _render(BARCHANOID, toward)
    along, across = _downwind_slopes(h, toward)
    assert (along**2).mean() > 3 * (across**2).mean()  # height varies along the wind: crests cross it
    steep = np.abs(along) > 0.5 * 10 * math.tan(math.radians(33))  # near the angle of repose
    assert steep.sum() > 50 and (along[steep] < 0).mean() > 0.9  # steep faces drop downwind


@pytest.mark.parametrize("toward", [0.0, 135.0])
def test_linear_dunes_run_parallel_to_the_wind(toward):
    h = _render(LINEAR, toward, size=256)
    along, across = _downwind_slopes(h, toward)
    assert (across**2).mean() > 4 * (along**2).mean()


def test_barchan_horns_point_downwind():
    toward = 60.0
    h = _render(CRESCENTIC, toward, size=256, seed=3)
    from scipy import ndimage

    labels, n = ndimage.label(h > 0.5)
    t = math.radians(toward)
    ux, uy = math.sin(t), -math.cos(t)  # downwind unit vector in (column, row)
    checked = 0
    for k in range(1, n + 1):
        rows, cols = np.nonzero(labels == k)
        if rows.size < 40:
            continue
        u = cols * ux + rows * uy  # downwind position
        v = cols * -uy + rows * ux  # crosswind position
        off = np.abs(v - np.median(v))
        # Horns (the crosswind flanks) reach further downwind than the body on the centre line.
        flanks, centre = off > 0.6 * off.max(), off < 0.2 * off.max()
        assert u[flanks].max() > u[centre].max()
        assert u[flanks].mean() > u[centre].mean()
        checked += 1
    assert checked >= 3


@pytest.mark.parametrize("cls", sorted(LANDFORMS))
def test_landform_windows_are_crops_of_the_whole_rendering(cls):
    # Scenes are rendered tile by tile; any window must equal the crop of the whole, or tiles would show seams.
    shape = (96, 112)
    wind = Wind(drift_deg=75.0, variability=0.4, bimodality=0.5, divergence_deg=120.0)
    render = LANDFORMS[cls](shape, wind, LandformStyle(), np.random.default_rng(cls))
    whole = render(Window(0, 0, *shape))
    part = render(Window(40, 24, 56, 70))
    for name in ("height", "sand", "veg", "wet"):
        a, b = getattr(whole, name)[40:96, 24:94], getattr(part, name)
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-4, err_msg=name)
        assert np.isfinite(a).all()
    assert (whole.sand >= 0).all() and (whole.veg <= 1).all()


def test_package_exports_the_public_api_and_grids_stay_on_the_10_m_lattice():
    import dunemap.synth as synth
    from dunemap.synth import scene as scene_module

    assert synth.generate_scene is scene_module.generate_scene and synth.SceneConfig is SceneConfig
    s = generate_scene(SceneConfig(size=(33, 47), region="atacama", seed=0))
    assert s.transform.c % 10 == 0 and s.transform.f % 10 == 0
    for x, y in scene_origins(REGIONS["namib"], (101, 77), 3, gap_px=13):
        assert x % 10 == 0 and y % 10 == 0


@pytest.mark.parametrize("region", sorted(PRESETS))
def test_ground_stays_less_sandy_than_any_sand_sheet(region: str) -> None:
    """The label rule: flat ground under a sand sheet's cover of loose sand would be a sand sheet."""
    style = PRESETS[region].style
    sands = [ground_cover((96, 96), style, np.random.default_rng(seed))[0] for seed in range(8)]
    assert GROUND_SAND_MAX < SAND_SHEET_COVER[0]
    assert max(float(s.max()) for s in sands) <= GROUND_SAND_MAX
    # The cap bounds the ground without flattening it: it still varies within and between scenes.
    assert min(float(s.std()) for s in sands) > 0.0
    uncapped = [ground_cover((96, 96), style, np.random.default_rng(seed), sand_max=1.0)[0] for seed in range(8)]
    assert all(np.array_equal(np.minimum(u, GROUND_SAND_MAX), s) for u, s in zip(uncapped, sands))
