"""Draw ``docs/conventions.png``: pixel coordinates, the angle phi and the position angle.

Run from the repository root: ``python docs/conventions_figure.py``. The picture is committed;
rerun this script after changing it.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.patches import Arc, Ellipse, FancyArrowPatch  # noqa: E402

OUT = Path(__file__).resolve().parent / "conventions.png"
#: Image size (pixels along axes 0 and 1), the ellipse's centre, axes and angle phi.
SHAPE = (9, 11)
X0, Y0 = 4.0, 5.0  # x0 along axis 0 (rows), y0 along axis 1 (columns)
A, Q, PHI = 3.4, 0.45, np.radians(30.0)


def _arrow(ax, start, end, color, text, offset=(0.0, 0.0), **kw):
    ax.add_patch(FancyArrowPatch(start, end, arrowstyle="-|>", mutation_scale=12, color=color, lw=1.5))
    ha = "left" if end[1] == start[1] and end[0] > start[0] else "center"
    ax.text(end[0] + offset[0], end[1] + offset[1], text, color=color, ha=ha, va="center", **kw)


def main() -> None:
    fig, ax = plt.subplots(figsize=(6.4, 5.4), layout="constrained")
    n0, n1 = SHAPE
    # Pixel (i, j) covers [i - 1/2, i + 1/2] x [j - 1/2, j + 1/2]; shown as a FITS viewer shows it:
    # axis 1 (columns, FITS x) to the right, axis 0 (rows, FITS y) up.
    for i in range(n0 + 1):
        ax.plot([-0.5, n1 - 0.5], [i - 0.5, i - 0.5], color="0.85", lw=0.8, zorder=0)
    for j in range(n1 + 1):
        ax.plot([j - 0.5, j - 0.5], [-0.5, n0 - 0.5], color="0.85", lw=0.8, zorder=0)
    jj, ii = np.meshgrid(np.arange(n1), np.arange(n0))
    ax.plot(jj.ravel(), ii.ravel(), ".", color="0.6", ms=3)
    ax.add_patch(plt.Rectangle((-0.5, -0.5), 1, 1, color="C1", alpha=0.35, lw=0))

    # Array axes.
    _arrow(ax, (-1.5, -1.5), (-1.5, 2.0), "k", "axis 0\n(row, FITS y)\nx0", offset=(0.0, 0.9), fontsize=8)
    _arrow(ax, (-1.5, -1.5), (2.0, -1.5), "k", "axis 1 (column, FITS x), y0", offset=(0.3, 0.0),
           fontsize=8)

    # The ellipse: semi-major axis A, axis ratio Q, major axis at PHI from axis 0 towards axis 1.
    # Display coordinates are (axis 1, axis 0), so the major axis points along (sin phi, cos phi).
    centre = (Y0, X0)
    ax.add_patch(Ellipse(centre, 2 * A, 2 * A * Q, angle=90 - np.degrees(PHI), fill=False, color="C0", lw=2))
    ax.plot(*centre, "+", color="C0", ms=10, mew=2)
    major = np.array([np.sin(PHI), np.cos(PHI)])
    ax.plot([Y0 - A * major[0], Y0 + A * major[0]], [X0 - A * major[1], X0 + A * major[1]], "C0--", lw=1)
    ax.plot([Y0, Y0], [X0, X0 + A + 0.3], "k:", lw=1)  # the +axis-0 direction through the centre
    ax.add_patch(Arc(centre, 2.6, 2.6, theta1=90 - np.degrees(PHI), theta2=90, color="C3", lw=1.5))
    ax.text(Y0 + 0.12, X0 + 1.55, "phi", color="C3", fontsize=10, ha="left",
            bbox=dict(fc="white", ec="none", pad=0.5))

    # A north-up, east-left sky: PA from north through east (counter-clockwise here).
    compass = np.array([n1 + 0.6, n0 - 2.2])
    _arrow(ax, tuple(compass), tuple(compass + (0, 1.6)), "C2", "N", offset=(0, 0.35), fontsize=10)
    _arrow(ax, tuple(compass), tuple(compass + (-1.6, 0)), "C2", "E", offset=(-0.35, 0), fontsize=10)
    ax.add_patch(Arc(centre, 4.2, 4.2, theta1=90, theta2=90 + (180 - np.degrees(PHI)), color="C2", lw=1.2))
    ax.text(Y0 - 2.6, X0 + 1.5, "PA", color="C2", fontsize=10)
    ax.text(-1.9, n0 + 1.2,
            f"q = {Q}, phi = {np.degrees(PHI):.0f} deg (axis 0 towards axis 1)\n"
            f"north up, east left: PA = 180 - phi = {180 - np.degrees(PHI):.0f} deg east of north\n"
            "shaded: pixel (0, 0), centred at (0, 0), covering -1/2 to 1/2 along both axes",
            fontsize=8, va="top")

    ax.set_xlim(-2.5, n1 + 2.6)
    ax.set_ylim(-2.2, n0 + 1.3)
    ax.set_aspect("equal")
    ax.set_axis_off()
    fig.savefig(OUT, dpi=110)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
