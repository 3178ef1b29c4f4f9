"""Checks of a least-squares problem's inputs, and which parameters rest on a bound.

:func:`check_problem` raises a ``ValueError`` naming the argument for an impossible problem
given as concrete arrays; under ``jit``/``vmap`` (traced arrays) it cannot raise, and
:func:`bad_input` gives the same verdict as a traced boolean that the solver turns into the
``BAD_INPUT`` status, so that one bad galaxy of a vmapped catalog does not stop the others.

:func:`decisive_bounds` says which bounds decide the answer when a parameter rests on them.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from imcascade_jax.model import Model


def is_concrete(*arrays) -> bool:
    """Whether none of ``arrays`` is a JAX tracer (their values can be inspected)."""
    return not any(isinstance(a, jax.core.Tracer) for a in arrays)


def check_shapes(model: Model, data, weight, x0, lb, ub) -> None:
    """Raise a ValueError naming the argument whose shape does not fit ``model``."""
    for name, arr in (("data", data), ("weight", weight)):
        if tuple(jnp.shape(arr)) != tuple(model.shape):
            raise ValueError(f"'{name}' must have the model's shape {model.shape}, "
                             f"got {jnp.shape(arr)}")
    for name, arr in (("x0", x0), ("lb", lb), ("ub", ub)):
        if tuple(jnp.shape(arr)) != (model.n_params,):
            raise ValueError(f"'{name}' must have shape ({model.n_params},) (4 structural + "
                             f"{model.n_gauss} fluxes + {model.n_sky} sky), got {jnp.shape(arr)}")


def _outside(x0, lb, ub, periodic_phi: bool):
    """Entries of x0 outside [lb, ub] (a periodic phi is wrapped, never outside)."""
    checked = np.arange(np.shape(x0)[0]) != 3 if periodic_phi else True
    return ((x0 < lb) | (x0 > ub)) & checked


def check_problem(model: Model, data, weight, x0, lb, ub, periodic_phi: bool) -> None:
    """Raise a ValueError naming the argument of an impossible problem (concrete arrays).

    Checks: ``lb``/``ub`` not NaN and ``lb <= ub``; ``x0`` finite and inside ``[lb, ub]``
    (phi excepted when periodic); ``weight`` finite and ``>= 0`` with at least one positive
    pixel; ``data`` finite where the weight is positive.
    """
    data, weight, x0, lb, ub = (np.asarray(a, float) for a in (data, weight, x0, lb, ub))
    for name, b in (("lb", lb), ("ub", ub)):
        if np.any(np.isnan(b)):
            raise ValueError(f"'{name}' has NaN entries at {np.flatnonzero(np.isnan(b)).tolist()}")
    if np.any(lb > ub):
        raise ValueError(f"'lb' > 'ub' at parameters {np.flatnonzero(lb > ub).tolist()}")
    if not np.all(np.isfinite(x0)):
        raise ValueError(f"'x0' has non-finite entries at {np.flatnonzero(~np.isfinite(x0)).tolist()}")
    outside = _outside(x0, lb, ub, periodic_phi)
    if np.any(outside):
        raise ValueError(f"'x0' lies outside [lb, ub] at parameters {np.flatnonzero(outside).tolist()}")
    bad_w = ~np.isfinite(weight) | (weight < 0)
    if np.any(bad_w):
        raise ValueError(f"'weight' must be finite and >= 0; {int(bad_w.sum())} pixels are not")
    if not np.any(weight > 0):
        raise ValueError("'weight' is zero everywhere: no pixel to fit")
    bad_d = (weight > 0) & ~np.isfinite(data)
    if np.any(bad_d):
        raise ValueError(f"'data' is non-finite at {int(bad_d.sum())} pixels of positive weight "
                         "(give them zero weight)")


def bad_input(data, weight, x0, lb, ub, periodic_phi: bool) -> jax.Array:
    """Traced verdict of :func:`check_problem`: True when the problem is impossible."""
    bad = jnp.any(jnp.isnan(lb)) | jnp.any(jnp.isnan(ub)) | jnp.any(lb > ub)
    bad |= ~jnp.all(jnp.isfinite(x0)) | jnp.any(_outside(x0, lb, ub, periodic_phi))
    bad |= jnp.any(~jnp.isfinite(weight) | (weight < 0)) | ~jnp.any(weight > 0)
    bad |= jnp.any((weight > 0) & ~jnp.isfinite(data))
    return bad


def decisive_bounds(model: Model, ub, periodic_phi: bool, lb=None, jtj=None):
    """Which bounds decide the answer when a parameter rests on them.

    The centre at either bound; the axis ratio at its lower bound (and at an upper bound
    below 1); a non-periodic position angle at either bound (a periodic one never is); a
    component flux at its upper bound, and at its lower bound when that floor holds light the
    data measure (more than the component's 1-sigma flux error, from ``jtj``; with ``lb`` and
    ``jtj`` only): a floor below that switches the component off, a legitimate answer, while a
    floor above it (e.g. from a flux guess far too high) sets the galaxy's light. A sky
    parameter at a bound is reported (``at_lower``/``at_upper``) but does not decide:
    imcascade's default sky bounds are a band about a guess from the image's edges, and a
    slope resting on it changes the galaxy's numbers by far less than their errors.

    Parameters
    ----------
    model : Model
    ub : jax.Array, shape (Ndof,)
        Upper bounds (only that of q is read).
    periodic_phi : bool
    lb : jax.Array, shape (Ndof,), optional
        Lower bounds (only the fluxes' are read; needed for linear fluxes).
    jtj : jax.Array, shape (Ndof, Ndof), optional
        ``J^T W J`` at the answer; without it a flux floor never decides.

    Returns
    -------
    lower, upper : array of bool, shape (Ndof,)
        NumPy arrays for concrete arguments (no JAX program is compiled for them), JAX arrays
        under a trace.
    """
    n, n_sky = model.n_gauss, model.n_sky
    lower = np.r_[True, True, True, not periodic_phi, np.zeros(n, bool), np.zeros(n_sky, bool)]
    upper = np.r_[True, True, False, not periodic_phi, np.ones(n, bool), np.zeros(n_sky, bool)]
    concrete = is_concrete(ub) and (jtj is None or (is_concrete(jtj) and is_concrete(lb)))
    xp = np if concrete else jnp
    lower, upper = xp.asarray(lower), xp.asarray(upper)
    if jtj is not None:
        lower = _set(lower, slice(4, 4 + n), _measured_floors(model, lb, jtj, xp))
    return lower, _set(upper, 2, xp.asarray(ub)[2] < 1.0)


def _set(a, index, value):
    """``a`` with ``a[index] = value``, for NumPy (a copy) and JAX arrays."""
    if isinstance(a, np.ndarray):
        a = a.copy()
        a[index] = value
        return a
    return a.at[index].set(value)


def _measured_floors(model: Model, lb, jtj, xp):
    """Whether each component's flux floor exceeds its 1-sigma flux error (conditional on the
    other parameters, i.e. from the diagonal of ``J^T W J``: a conservative test)."""
    n = model.n_gauss
    info = xp.diagonal(xp.asarray(jtj))[4:4 + n]
    if model.log_weight_scale:
        # In log10 flux, flux / sigma(flux) = sqrt(info) / ln 10 whatever the floor.
        return info > math.log(10.0) ** 2
    return xp.asarray(lb)[4:4 + n] ** 2 * info > 1.0
