"""Source detection for the automatic set-up: background, the target's footprint, the others.

sep (SExtractor's algorithms) measures the background and its rms and finds the sources. What
this module adds to imcascade 1.1's recipe:

- **Unit-free**: sep works in float32, so the image is divided by a power of two near its robust
  spread before sep sees it and every flux-like result is scaled back. Multiplying the image by
  any ``s`` (1e-30 .. 1e30) gives the same segmentation, mask and widths, fluxes ``s`` times.
- **The target is never masked**: sep's deblending splits large galaxies into pieces (arms,
  star-forming knots). The target is the detection at the requested position *merged with the
  deblended pieces of its own undeblended footprint* that lie within three times its
  second-moment ellipse and are fainter than its central piece; the automatic mask (the other
  sources, expanded) never covers those pixels.
- **Faint targets**: when nothing is detected at the position at 2.5 sigma, detection is
  retried on images smoothed with Gaussians of 1.5 and 3 px (at 2.5 sigma of
  the smoothed image's own noise) before giving up; the size and flux are then measured on the
  smoothed image.
- **Positions**: a position the user gave that is more than :data:`NEAR_PX` from every detection
  raises :class:`~imcascade_jax.errors.NoSourceError` instead of silently fitting another source
  (``force_position=True`` fits there anyway); without a given position, the nearest detection
  within a tenth of the shorter side of the centre is used (logged), none raises.

Positions are (row, column) = (axis 0, axis 1), 0-based with pixel centres at integers (sep's
``x``/``y`` are column/row).
"""

from __future__ import annotations

import dataclasses
import logging
import math

import numpy as np

from imcascade_jax.errors import NoSourceError
from imcascade_jax.setup_maths import expand_mask, power_of_two, robust_scale

__all__ = ["Detection", "detect_target", "NEAR_PX", "DETECTION_LEVELS"]

logger = logging.getLogger("imcascade_jax")

#: A detection whose footprint comes this close (pixels) to a position the user gave is the target.
NEAR_PX = 3.0
#: Without a given position (the image centre), the nearest detection within this fraction of the
#: shorter side (at least NEAR_PX) is the target, with a warning in the log.
NEAR_CENTRE_FRACTION = 0.1
#: (threshold in noise sigmas, Gaussian smoothing sigma in px or None for sep's default 3x3
#: kernel on the unsmoothed image) tried in turn until something is detected at the position.
DETECTION_LEVELS = ((2.5, None), (2.5, 1.5), (2.5, 3.0))
#: Deblended pieces centred within this many second-moment radii of the target belong to it.
TARGET_EXTENT = 3.0
#: 1.1's expansion of the mask of the other sources (Gaussian radius, threshold).
MASK_RADIUS, MASK_THRESHOLD = 2.5, 0.01


@dataclasses.dataclass
class Detection:
    """What sep found, in the image's units.

    Attributes
    ----------
    back : float
        Global background level.
    rms : numpy.ndarray
        Background rms map.
    target : numpy.ndarray of bool
        The target's pixels (empty when fitting at a forced position with no detection).
    mask : numpy.ndarray of bool
        The other sources, expanded, never covering ``target``.
    size : float or None
        Second-moment semi-major axis ``a`` of the target (px); None with no detection.
    flux : float or None
        sep's flux of the target; None with no detection.
    level : int
        Index into :data:`DETECTION_LEVELS` of the detection used (-1: none).
    centre : tuple of float or None
        (row, column) of the target (sep's barycentre, 0-based, pixel centres at integers) when
        it was taken as the detection nearest the image centre, no position having been given
        (the fit then starts there); None otherwise.
    """

    back: float
    rms: np.ndarray
    target: np.ndarray
    mask: np.ndarray
    size: float | None
    flux: float | None
    level: int
    centre: tuple[float, float] | None = None


def _extract(work: np.ndarray, rms: float, bad: np.ndarray, thresh: float, smooth: float | None,
             deblend_cont: float):
    """sep's extraction at ``thresh`` times the noise; ``smooth``: first smooth the image with a
    Gaussian of that sigma (px) and measure the noise of the smoothed image (sep's own filter
    compares the filtered image with the unfiltered noise, which hides faint extended sources)."""
    import sep

    if smooth is None:
        return sep.extract(work, thresh, err=rms, mask=bad, segmentation_map=True,
                           deblend_cont=deblend_cont)
    from scipy.ndimage import gaussian_filter

    smoothed = np.ascontiguousarray(gaussian_filter(np.where(bad, 0.0, work), smooth))
    noise = robust_scale(smoothed[~bad])
    return sep.extract(smoothed, thresh, err=noise, mask=bad, segmentation_map=True,
                       deblend_cont=deblend_cont, filter_kernel=None)


def _nearest_segment(seg: np.ndarray, row: float, col: float) -> tuple[int, float]:
    """Id of the segment with a pixel nearest to (row, col), and that distance (0, inf if none)."""
    rows, cols = np.nonzero(seg)
    if rows.size == 0:
        return 0, math.inf
    d2 = (rows - row) ** 2 + (cols - col) ** 2
    k = int(np.argmin(d2))
    return int(seg[rows[k], cols[k]]), float(math.sqrt(d2[k]))


def _target_pieces(objects, seg: np.ndarray, parent_seg: np.ndarray, child: int,
                   parent: int) -> list[int]:
    """Deblended ids that make up the target: the central piece and the fainter pieces of its
    undeblended footprint centred within TARGET_EXTENT of the central piece's own second-moment
    ellipse (knots of a clumpy galaxy; a neighbour blended into the same footprint but beyond
    the target's own extent stays a separate source, as in crowded fields)."""
    ids = np.unique(seg[parent_seg == parent])
    c = objects[child - 1]
    pieces = [child]
    for i in ids[ids > 0]:
        o = objects[i - 1]
        dx, dy = o["x"] - c["x"], o["y"] - c["y"]
        r2 = c["cxx"] * dx * dx + c["cyy"] * dy * dy + c["cxy"] * dx * dy
        if i != child and r2 <= TARGET_EXTENT**2 and o["flux"] <= c["flux"]:
            pieces.append(int(i))
    return pieces


def _pixel(row: float, col: float, shape: tuple[int, ...]) -> tuple[int, int]:
    """The pixel holding (row, col) as 1.1 picks it (truncation), clipped to the image."""
    return int(np.clip(int(row), 0, shape[0] - 1)), int(np.clip(int(col), 0, shape[1] - 1))


def _find_at(work, rms, bad, pixel, first):
    """The first detection level with a source at ``pixel``: (level, objects, seg) or None.

    ``first``: the (objects, seg) of level 0, already extracted.
    """
    for level, (thresh, smooth) in enumerate(DETECTION_LEVELS):
        objects, seg = first if level == 0 else _extract(work, rms, bad, thresh, smooth, 1e-3)
        if seg[pixel] > 0:
            return level, objects, seg
    return None


def detect_target(img: np.ndarray, bad: np.ndarray, row: float, col: float, position_given: bool,
                  force_position: bool = False, mask_others: bool = True) -> Detection:
    """Background, the target at (row, col) and a mask of the other sources.

    Parameters
    ----------
    img : numpy.ndarray
        The image (any finite values; ``bad`` pixels are ignored).
    bad : numpy.ndarray of bool
        Pixels to ignore.
    row, col : float
        Requested position (axis 0, axis 1).
    position_given : bool
        Whether the user gave the position (only for the error message).
    force_position : bool
        With no detection within :data:`NEAR_PX` of the position, fit there anyway (no target
        size or flux is measured) instead of raising.
    mask_others : bool
        Build the mask of the other sources (False: ``mask`` is all False).

    Raises
    ------
    NoSourceError
        Nothing detected within :data:`NEAR_PX` of the position (unless ``force_position``).
    """
    import sep

    scale = power_of_two(robust_scale(img[~bad]))
    work = np.ascontiguousarray(np.where(bad, 0.0, img) / scale, dtype=np.float64)
    bkg = sep.Background(work, mask=bad, bw=32, bh=32)
    rms = bkg.globalrms
    objects, seg = _extract(work, rms, bad, *DETECTION_LEVELS[0], 1e-3)
    pixel = _pixel(row, col, img.shape)
    found = _find_at(work, rms, bad, pixel, (objects, seg))
    level, centre = -1, None
    if found is not None:
        level, t_objects, t_seg = found
        child = int(t_seg[pixel])
    else:
        child, dist = _nearest_segment(seg, row, col)
        where = f"({row:.1f}, {col:.1f})" + ("" if position_given else ", the image centre")
        near = NEAR_PX if position_given else max(NEAR_PX, NEAR_CENTRE_FRACTION * min(img.shape))
        if dist <= near:
            logger.warning("No source at %s; using the detection %.1f px away", where, dist)
            level, t_objects, t_seg = 0, objects, seg
            if not position_given:  # start the fit on it (sep: x along axis 1, y along axis 0)
                centre = (float(objects[child - 1]["y"]), float(objects[child - 1]["x"]))
        elif not force_position:
            nearest = "no source at all" if child == 0 else f"the nearest is {dist:.1f} px away"
            raise NoSourceError(f"no source detected at {where} ({nearest}); give x0/y0 of the target, "
                                "or force_position=True to fit there anyway")
    target = np.zeros(img.shape, bool)
    size = flux = None
    if level >= 0:
        thresh, smooth = DETECTION_LEVELS[level]
        parents, parent_seg = _extract(work, rms, bad, thresh, smooth, 1.0)
        under = parent_seg[t_seg == child]
        parent = int(np.bincount(under).argmax()) if under.size else 0
        pieces = [child] if parent == 0 else \
            _target_pieces(t_objects, t_seg, parent_seg, child, parent)
        target = np.isin(t_seg, pieces)
        merged = len(pieces) > 1
        size = float(parents[parent - 1]["a"] if merged else t_objects[child - 1]["a"])
        flux = float(sum(t_objects[i - 1]["flux"] for i in pieces)) * scale
    mask = np.zeros(img.shape, bool)
    if mask_others:
        others = (seg > 0) & ~target
        mask = expand_mask(others.astype(float), radius=MASK_RADIUS, threshold=MASK_THRESHOLD) > 0
        mask &= ~target
    return Detection(float(bkg.globalback) * scale, bkg.rms() * scale, target, mask, size, flux,
                     level, centre)
