"""The stratified estimator of accuracy and area (Olofsson et al. 2014; Stehman 2014): pure functions, no I/O.

Strata are the map classes. With ``n_ij`` sample points of map class ``i`` whose reference class is
``j``, ``n_i.`` points in stratum ``i`` and ``W_i`` the share of the mapped area in class ``i``, the
error matrix in area proportions is ``p_ij = W_i n_ij / n_i.``. From it:

- overall accuracy ``O = sum_j p_jj``, ``V(O) = sum_i W_i^2 U_i (1 - U_i) / (n_i. - 1)``;
- user's accuracy ``U_i = n_ii / n_i.``, ``V(U_i) = U_i (1 - U_i) / (n_i. - 1)``;
- producer's accuracy ``P_j = p_jj / p_.j`` with the variance of Olofsson et al. 2014, eq. 7;
- the error-adjusted area of class ``k``, ``A p_.k``, with
  ``SE(p_.k) = sqrt(sum_i W_i^2 (n_ik / n_i.)(1 - n_ik / n_i.) / (n_i. - 1))``.

Every interval is ``estimate +- 1.96 SE`` (95 %). A stratum needs at least 2 points: with one the
variance is undefined.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dunemap.errors import InputError

Z95 = 1.96  # two-sided 95 % normal quantile, as rounded in Olofsson et al. 2014
MIN_STRATUM_POINTS = 2  # the fewest points of a stratum with a variance (one pixel with its one point is a census)


@dataclass(frozen=True)
class StratifiedEstimate:
    """Accuracy and area estimates of one stratified sample; arrays are indexed like ``counts``' rows and columns.

    Areas are in the unit of ``mapped_area``. Undefined values (user's accuracy of a class never
    mapped, producer's accuracy of a class found nowhere) are NaN.
    """

    counts: np.ndarray  # (q, q) int: sample points, rows = map class, columns = reference class
    mapped_area: np.ndarray  # (q,) mapped area of each class (the strata sizes)
    proportions: np.ndarray  # (q, q) estimated error matrix in area proportions p_ij
    overall: float
    overall_se: float
    users: np.ndarray
    users_se: np.ndarray
    producers: np.ndarray
    producers_se: np.ndarray
    area: np.ndarray  # error-adjusted area of each class
    area_se: np.ndarray

    @staticmethod
    def ci95(se: np.ndarray | float) -> np.ndarray | float:
        """Half-width of the 95 % confidence interval for a standard error."""
        return Z95 * se


def stratified_estimate(counts: np.ndarray, mapped_area: np.ndarray,
                        stratum_pixels: np.ndarray | None = None) -> StratifiedEstimate:
    """Estimate accuracy and error-adjusted area from a sample ``counts`` (map x reference) stratified by map class.

    ``mapped_area[i]`` is the area mapped as class ``i``; a class with no mapped area (found only in
    the reference) must have no sample row. Raises InputError for a mapped class with fewer than 2
    points, unless ``stratum_pixels`` says the class was mapped on that one pixel alone: a stratum of
    one pixel with its one point is a census and has no sampling variance.
    """
    n = np.asarray(counts, dtype=np.float64)
    area = np.asarray(mapped_area, dtype=np.float64)
    q = area.shape[0]
    if n.shape != (q, q):
        raise InputError(f"error matrix of shape {n.shape} does not fit {q} classes")
    if (n < 0).any() or (area < 0).any() or area.sum() <= 0:
        raise InputError("counts and mapped areas must be non-negative, with some mapped area")
    n_i = n.sum(axis=1)
    census = np.zeros(q, dtype=bool) if stratum_pixels is None else (n_i == 1) & (np.asarray(stratum_pixels) == 1)
    thin = np.flatnonzero((area > 0) & (n_i < MIN_STRATUM_POINTS) & ~census)
    if thin.size:
        raise InputError(f"stratum (map class index) {int(thin[0])} has {int(n_i[thin[0]])} sample point(s); "
                         f"at least {MIN_STRATUM_POINTS} are needed for a variance")
    stray = np.flatnonzero((area == 0) & (n_i > 0))
    if stray.size:
        raise InputError(f"map class index {int(stray[0])} has sample points but no mapped area")
    w = area / area.sum()
    sampled = n_i > 0
    rows = np.divide(n, n_i[:, None], out=np.zeros_like(n), where=sampled[:, None])  # n_ij / n_i.
    dof = np.where(sampled & ~census, n_i - 1, 1.0)  # n_i. - 1 (unused where a stratum is empty or censused)
    p = w[:, None] * rows

    users = np.where(sampled, np.diag(rows), np.nan)
    users_var = np.where(sampled, np.where(census, 0.0, users * (1 - users) / dof), np.nan)
    overall = float(np.trace(p))
    overall_var = float(np.nansum(w**2 * users_var))

    # Producer's accuracy, Olofsson et al. 2014 eq. 7, with mapped areas standing for pixel counts N_i.
    col = p.sum(axis=0)
    n_ref = (area[:, None] * rows).sum(axis=0)  # estimated reference area of each class
    producers = np.divide(np.diag(p), col, out=np.full(q, np.nan), where=col > 0)
    cell_var = np.where((sampled & ~census)[:, None], rows * (1 - rows) / dof[:, None], 0.0)  # map row i, ref col j
    producers_var = np.full(q, np.nan)
    for j in np.flatnonzero(col > 0):
        own = area[j] ** 2 * (1 - producers[j]) ** 2 * users_var[j] if sampled[j] else 0.0
        others = sum(area[i] ** 2 * cell_var[i, j] for i in range(q) if i != j)
        producers_var[j] = (own + producers[j] ** 2 * others) / n_ref[j] ** 2

    area_var = (w[:, None] ** 2 * cell_var).sum(axis=0)  # of the area proportions p_.k
    total = area.sum()
    return StratifiedEstimate(
        counts=n.astype(np.int64), mapped_area=area, proportions=p, overall=overall,
        overall_se=float(np.sqrt(overall_var)), users=users, users_se=np.sqrt(users_var), producers=producers,
        producers_se=np.sqrt(producers_var), area=col * total, area_se=np.sqrt(area_var) * total,
    )
