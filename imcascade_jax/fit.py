"""Bounded least squares for multi-Gaussian models: exact Jacobians, compiled, vmap-able.

The solver is a projected Levenberg-Marquardt method written for this problem:

- residuals ``r = sqrt(w) (data - model)``; the Jacobian is assembled from its structure: the
  columns of the N fluxes are the component images themselves (times ``ln 10 * flux`` in log
  scale), the sky columns are planes, and the 4 structural columns (x0, y0, q, phi) are closed-form
  derivatives sharing the image's exponentials (:mod:`imcascade_jax.derivatives`; forward-mode
  autodiff for the exact-integral renderer). A finite-difference Jacobian costs ``Ndof + 1``
  renders;
- bounds by projection: a variable at a bound whose gradient points outward is held fixed for
  the step, the others take a Marquardt-scaled damped Gauss-Newton step which is then clipped to
  the box. imcascade's flux bounds ``[a_max - 5, a_max]`` are active at the optimum of most real
  fits (faint components pinned at the floor), which is why a bound transformation (whose
  Jacobian vanishes at the bounds) converged slowly in our trials;
- the position angle is periodic: with the default bounds ``[0, pi]`` it is wrapped, not clipped
  (1.1 clips it, so fits of galaxies with a position angle near 0 stall at the bound);
- everything is one ``lax.while_loop``: the fit compiles once per image shape and model (once
  per model structure on stacks of tiles, :mod:`imcascade_jax.tiles`), runs without Python in
  the loop, and ``jax.vmap`` turns it into a batched catalog fit. Failures come
  back as a :class:`~imcascade_jax.status.FitStatus` code, never as exceptions (an impossible
  problem given as concrete arrays raises a ``ValueError`` before the solver starts);
- unit-free: the solver works on the data divided by a robust level of the data (a power of
  two, so the division is exact) with fluxes, sky and their bounds divided alike, so that
  scaling the image and its errors by ``s`` scales the fitted fluxes and sky by ``s`` and leaves
  the geometry unchanged; every tolerance is relative;
- memory proportional to the pixels: the loop holds only the point, its cost and its normal
  equations ``J^T J``, ``J^T r``, accumulated over bands of rows
  (:mod:`imcascade_jax.normal_equations`); the full Jacobian is computed only on request
  (:func:`jacobian_at`);
- honest statuses: success only when a convergence criterion holds and the answer is usable:
  a fit whose damping blew up is ``STALLED``, one that never moved the galaxy (or whose galaxy
  touches no weighted pixel) ``NO_PROGRESS``, one with a parameter on a bound that decides the
  answer (:func:`imcascade_jax.fit_inputs.decisive_bounds`) ``AT_BOUND``; ``at_lower`` /
  ``at_upper`` say which parameters rest on a bound.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from imcascade_jax.derivatives import (
    basis_and_tangents,
    basis_and_tangents_autodiff,
    supports_closed_form,
)
from imcascade_jax.fit_inputs import (
    bad_input,
    check_problem,
    check_shapes,
    decisive_bounds,
    is_concrete,
)
from imcascade_jax.fit_memory import COMPILE_BYTES, fit_memory_bytes, fit_memory_estimate
from imcascade_jax.model import Model
from imcascade_jax.normal_equations import (
    BAND_PIXELS,
    BandPlan,
    NormalEquations,
    band_plan,
    banded_jacobian,
    jacobian_band_pixels,
    normal_equations,
    pad_rows,
    residual_image,
)
from imcascade_jax.params import unpack
from imcascade_jax.render import render_sky, weighted_sum
from imcascade_jax.status import STATUS_MESSAGES, FitStatus

__all__ = ["STATUS_MESSAGES", "FitStatus", "SolverOptions", "DEFAULT_OPTIONS", "solver_options",
           "FitResult", "model_and_jacobian", "piece_model_and_jacobian",
           "jacobian_at", "usable_data", "data_scale", "least_squares", "least_squares_jit",
           "solve_jit", "solve_with", "fit_memory_bytes", "fit_memory_estimate", "COMPILE_BYTES",
           "REJECTED_FTOL_FACTOR"]

_LN10 = 2.302585092994046
#: Relative damping beyond which the solver has stalled (steps shrunk to nothing).
_MAX_DAMPING = 1e16
#: After a rejected trial the promise is compared with this multiple of ftol: a step the
#: quadratic model promised but the model image did not deliver marks the model's own
#: precision floor (round-off, the hybrid renderer's cut-off of the far wings), which a
#: promise below ftol = 1e-10 may never reach; without it such fits ran on until the damping
#: blew up and were reported stalled at their minimum.
REJECTED_FTOL_FACTOR = 100.0
#: A parameter within this fraction of its box's width from a bound rests on it.
_BOUND_TOL = 1e-10


class SolverOptions(NamedTuple):
    """Options of :func:`least_squares` (the keys ``Fitter.run_ls_min(ls_kwargs)`` accepts).

    Attributes
    ----------
    max_steps : int
        Maximum number of Levenberg-Marquardt steps (each one Jacobian evaluation).
    ftol : float
        Converged when the last accepted step reduced chi2 by less than ``ftol`` relative and
        the Gauss-Newton model promises no more than that; after a rejected step, when the
        model promises less than :data:`REJECTED_FTOL_FACTOR` times ``ftol``.
    xtol : float
        Converged when every entry of the Gauss-Newton step is below ``xtol * (|x_i| + xtol)``
        (fluxes and sky in the solver's units, :func:`data_scale`).
    gtol : float
        Converged when the largest scaled projected gradient is below ``gtol * sqrt(chi2)``.
    damping : float
        Initial damping, relative to the diagonal of ``J^T J``.
    band_pixels : int
        Pixels per band over which the normal equations are accumulated
        (:mod:`imcascade_jax.normal_equations`): smaller bands use less memory.
    """

    max_steps: int = 100
    # 1e-8 (MINPACK's) stopped flat problems (a cascade's overlapping widths) while the fluxes
    # still moved by ~1e-7 of the total flux, so that round-off in the inputs changed them by
    # that much; 1e-10 costs about one more step.
    ftol: float = 1e-10
    xtol: float = 1e-8
    gtol: float = 1e-8
    damping: float = 1e-3
    band_pixels: int = BAND_PIXELS


DEFAULT_OPTIONS = SolverOptions()
_OPTION_ALIASES = {"max_nfev": "max_steps"}


def solver_options(kwargs: dict, name: str = "ls_kwargs") -> SolverOptions:
    """Build :class:`SolverOptions` from a dict (``Fitter.run_ls_min``'s ``ls_kwargs``; ``name``
    is the argument named in errors).

    Raises
    ------
    ValueError
        For a key that is not an option (scipy-only options such as ``method`` or ``loss``
        have no equivalent here).
    """
    opts = {}
    for key, value in kwargs.items():
        field = _OPTION_ALIASES.get(key, key)
        if field not in SolverOptions._fields:
            raise ValueError(f"unknown least-squares option {key!r} in '{name}'; valid options "
                             f"are {list(SolverOptions._fields) + list(_OPTION_ALIASES)}")
        opts[field] = int(value) if field in ("max_steps", "band_pixels") else float(value)
    return SolverOptions(**opts)


class FitResult(NamedTuple):
    """Outcome of :func:`least_squares` (a pytree; batched under ``vmap``).

    The Jacobian is not part of it (it is ``Ndof`` images): :func:`jacobian_at` computes it.

    Attributes
    ----------
    x : jax.Array
        Best parameters, shape ``(Ndof,)``, in the model's parametrisation; centre in pixel
        coordinates (axis 0, axis 1), phi in radians from axis 0 towards axis 1.
    chi2 : jax.Array
        ``sum(w (data - model)^2)`` at ``x``.
    jtj : jax.Array
        ``J^T J`` of the residuals at ``x`` (its inverse is the covariance of the parameters).
    residuals : jax.Array
        ``sqrt(w) (data - model)`` at ``x``, shape model.shape.
    n_steps : jax.Array
        Number of steps taken (each one evaluation of the residuals and their Jacobian).
    status : jax.Array
        An ``int(FitStatus)``; > 0 success.
    at_lower, at_upper : jax.Array of bool, shape (Ndof,)
        Parameters resting on their lower / upper bound (never a periodic phi).
    """

    x: jax.Array
    chi2: jax.Array
    jtj: jax.Array
    residuals: jax.Array
    n_steps: jax.Array
    status: jax.Array
    at_lower: jax.Array
    at_upper: jax.Array


def piece_model_and_jacobian(model: Model, param: jax.Array):
    """Model image and its Jacobian with respect to the flat parameter vector, in one piece.

    What the solvers evaluate on each band of rows or tile; :func:`model_and_jacobian` is the
    same on a whole image, with bounded temporaries.

    Parameters
    ----------
    model : Model
    param : jax.Array, shape (Ndof,)

    Returns
    -------
    image : jax.Array, shape (nx, ny)
    jac : jax.Array, shape (Ndof, nx, ny)
        ``d image / d param_i`` for each parameter.
    """
    p = unpack(model, param)
    # Closed-form structural derivatives where they exist (faster to compile and to run);
    # forward-mode autodiff otherwise. Both are exact (tests/test_derivatives.py).
    if supports_closed_form(model):
        # The basis shares each component's exp with the derivatives (one per pixel).
        basis, d_structural = basis_and_tangents(model, p.x0, p.y0, p.q, p.phi, p.flux)
    else:
        basis, d_structural = basis_and_tangents_autodiff(model, p.x0, p.y0, p.q, p.phi, p.flux)
    image = weighted_sum(p.flux, basis) + render_sky(model, p.sky)
    dflux_da = p.flux * _LN10 if model.log_weight_scale else jnp.ones_like(p.flux)
    d_flux = basis * dflux_da[:, None, None]
    columns = [d_structural, d_flux]
    if model.n_sky:
        # The sky is linear in its parameters: its columns are the sky images of unit vectors.
        eye = jnp.eye(model.n_sky, dtype=param.dtype)
        columns.append(jax.vmap(lambda e: render_sky(model, e))(eye))
    return image, jnp.concatenate(columns, axis=0)


def model_and_jacobian(model: Model, param: jax.Array):
    """Model image ``(nx, ny)`` and its Jacobian ``(Ndof, nx, ny)``, ``d image / d param_i``.

    The numbers of :func:`piece_model_and_jacobian`, evaluated in bands of rows whose
    intermediates stay bounded (:func:`~imcascade_jax.normal_equations.jacobian_band_pixels`).
    """
    return banded_jacobian(model, piece_model_and_jacobian, param, jacobian_band_pixels(model))


def jacobian_at(model: Model, param: jax.Array, weight: jax.Array) -> jax.Array:
    """Jacobian of the residuals ``sqrt(w) (data - model)`` at ``param``.

    Parameters
    ----------
    model : Model
    param : jax.Array, shape (Ndof,)
        In the model's parametrisation (log10 fluxes when ``model.log_weight_scale``).
    weight : jax.Array, shape model.shape

    Returns
    -------
    jax.Array, shape (Ndof, nx, ny)
        ``-sqrt(w) d model / d param_i``: ``Ndof`` images, so only for what needs them all
        (the solver accumulates ``J^T J`` band by band instead).
    """
    _, dimage = model_and_jacobian(model, jnp.asarray(param, model.dtype))
    return -jnp.sqrt(jnp.asarray(weight, model.dtype))[None] * dimage


def usable_data(data: jax.Array, weight: jax.Array, xp=jnp):
    """``(data, weight)`` with pixels of non-positive or non-finite weight, or non-finite data,
    set to 0 (weight 0: they take no part in the fit). ``xp``: ``jax.numpy`` or ``numpy``."""
    usable = (weight > 0) & xp.isfinite(weight) & xp.isfinite(data)
    return xp.where(usable, data, 0.0), xp.where(usable, weight, 0.0)


def data_scale(data: jax.Array, weight: jax.Array, xp=jnp) -> jax.Array:
    """The unit the solver measures the data in: a power of two near the median ``|data|``.

    Over pixels of positive weight; the largest ``|data|`` when the median is 0, and 1 for an
    image of zeros. A power of two, so that dividing by it is exact; for ``data * s`` it is
    ``s`` times that of ``data`` (up to the rounding to a power of two). ``xp``: the array
    namespace, ``jax.numpy`` (traceable) or ``numpy`` (on the host, no compilation).
    """
    a = xp.abs(data)
    good = (weight > 0) & xp.isfinite(a)
    if xp is np and not np.any(good):
        return np.float64(1.0)  # as below, without NumPy's warning about an all-NaN median
    median = xp.nanmedian(xp.where(good, a, xp.nan))
    top = xp.max(xp.where(good, a, 0.0))
    level = xp.where(median > 0, median, xp.where(top > 0, top, 1.0))
    level = xp.where(xp.isfinite(level), level, 1.0)
    # ldexp, not exp2: exactly a power of two (JAX's exp2 of an integer can be 1 ulp off).
    return xp.ldexp(xp.ones_like(level), xp.round(xp.log2(level)).astype(np.int32))


def _open_bounds(lb, ub, periodic_phi):
    """Bounds the linear step respects: with the default geometry bounds (phi spanning pi,
    q up to 1) phi is periodic and q may cross 1, see :func:`_canonical`."""
    if not periodic_phi:
        return lb, ub
    inf = jnp.asarray(jnp.inf, ub.dtype)
    ub = ub.at[2].set(jnp.where(ub[2] >= 1.0, inf, ub[2])).at[3].set(inf)
    return lb.at[3].set(-inf), ub


def _canonical(x, lb, ub, periodic_phi):
    """Map a point back into the box.

    With ``periodic_phi``: an axis ratio q > 1 is the same ellipse as 1/q turned by pi/2, and
    phi is defined modulo pi. Reflecting and wrapping (rather than clipping at q = 1, where
    phi has no effect on the image and a clipped solver stalls) lets a fit started at the
    wrong orientation turn round; 1.1 clips both.
    """
    if periodic_phi:
        q = x[2]
        flip = (q > 1.0) & (ub[2] >= 1.0)
        x = x.at[2].set(jnp.where(flip, 1.0 / q, q))
        phi = jnp.where(flip, x[3] + 0.5 * jnp.pi, x[3])
        x = x.at[3].set(lb[3] + jnp.mod(phi - lb[3], jnp.pi))
    return jnp.clip(x, lb, ub)


def _to_internal(model: Model, v, scale):
    """Model parameters -> the solver's: linear fluxes (Gauss-Newton is exact in them, so the N
    fluxes converge in one step instead of crawling along log-space curvature), fluxes and sky
    in units of ``scale``."""
    n = model.n_gauss
    flux = jnp.power(10.0, v[4:4 + n]) if model.log_weight_scale else v[4:4 + n]
    return jnp.concatenate([v[:4], flux / scale, v[4 + n:] / scale])


def _from_internal(model: Model, v, scale):
    n = model.n_gauss
    flux = v[4:4 + n] * scale
    flux = jnp.log10(flux) if model.log_weight_scale else flux
    return jnp.concatenate([v[:4], flux, v[4 + n:] * scale])


def _internal_chain(model: Model, v, scale):
    """d(internal) / d(model parameter), per parameter: the Jacobian's column scales."""
    n = model.n_gauss
    flux = v[4:4 + n] * _LN10 if model.log_weight_scale else jnp.full(n, 1.0 / scale, v.dtype)
    return jnp.concatenate([jnp.ones(4, v.dtype), flux, jnp.full(model.n_sky, 1.0 / scale, v.dtype)])


class _State(NamedTuple):
    x: jax.Array  # accepted point and its normal equations
    eq: NormalEquations
    trial: jax.Array  # next point to evaluate
    lam: jax.Array
    nu: jax.Array
    predicted: jax.Array  # reduction of cost the linear model predicts for the trial
    step: jax.Array
    n_accepted: jax.Array  # accepted steps after the start
    status: jax.Array


class _Problem(NamedTuple):
    """The solver's view: internal units, open bounds for the step, tolerances."""

    lb: jax.Array
    ub: jax.Array
    step_lb: jax.Array
    step_ub: jax.Array
    ftol: float
    xtol: float
    gtol: float
    damping: float
    max_steps: int


def _damped_step(prob: _Problem, x, eq: NormalEquations, lam):
    """Projected, Marquardt-scaled damped Gauss-Newton step.

    Returns the step clipped to the box, the reduction of the cost the quadratic model
    predicts for it, the reduction it predicts for the unclipped step (>= 0: a clipped step
    can predict an increase) and the scaled projected gradient.
    """
    dtype = x.dtype
    eps = 10 * jnp.finfo(dtype).eps
    tiny = jnp.finfo(dtype).tiny
    jtj, grad = eq.jtj, eq.grad
    at_lower = (x <= prob.step_lb + eps * (1 + jnp.abs(prob.step_lb))) & (grad > 0)
    at_upper = (x >= prob.step_ub - eps * (1 + jnp.abs(prob.step_ub))) & (grad < 0)
    # A parameter the image does not depend on here (phi of a round model, q = 1) has a zero
    # column: hold it this step rather than solve a singular system.
    raw_diag = jnp.diag(jtj)
    free = ~(at_lower | at_upper) & (raw_diag > eps * eps * jnp.max(raw_diag))
    # Solve in columns scaled to unit norm (Marquardt): sky slopes and fluxes differ by
    # ~1e10 in J^T J, which float32 cannot solve unscaled.
    scale = 1.0 / jnp.sqrt(jnp.maximum(raw_diag, tiny))
    n = x.shape[0]
    ff = free[:, None] & free[None, :]
    a = jnp.where(ff, jtj * scale[:, None] * scale[None, :] + lam * jnp.eye(n, dtype=dtype), 0.0) \
        + jnp.diag(jnp.where(free, 0.0, 1.0))
    delta = scale * jnp.linalg.solve(a, -jnp.where(free, grad * scale, 0.0))
    step = jnp.clip(x + delta, prob.step_lb, prob.step_ub) - x
    predicted = -(grad @ step + 0.5 * step @ jtj @ step)
    promised = -(grad @ delta + 0.5 * delta @ jtj @ delta)
    projected_grad = jnp.where(free, grad, 0.0) * scale
    return step, predicted, promised, projected_grad


def _body(prob: _Problem, evaluate, periodic_phi: bool, s: _State) -> _State:
    # 1. Evaluate the trial point; accept it if it lowers the cost (the first one always).
    t = evaluate(s.trial)
    finite = t.finite & jnp.isfinite(t.cost)
    actual = s.eq.cost - t.cost
    first = s.step == 0
    accept = finite & ((actual > 0) | first)
    rho = actual / jnp.maximum(s.predicted, jnp.finfo(t.cost.dtype).tiny)
    lam = jnp.where(first, s.lam, jnp.where(
        accept, s.lam * jnp.maximum(1.0 / 3.0, 1.0 - (2.0 * rho - 1.0) ** 3), s.lam * s.nu))
    nu = jnp.where(accept, 2.0, 2.0 * s.nu)
    x = jnp.where(accept, s.trial, s.x)
    eq = jax.tree_util.tree_map(lambda new, old: jnp.where(accept, new, old), t, s.eq)

    # 2. Next trial: a damped step; and the Gauss-Newton step at the initial damping (or
    # less), whose size and predicted gain say whether x is the optimum.
    step, predicted, _, projected_grad = _damped_step(prob, x, eq, lam)
    gn_step, _, gn_gain, _ = _damped_step(prob, x, eq, jnp.minimum(lam, prob.damping))
    trial = _canonical(x + step, prob.lb, prob.ub, periodic_phi)

    # 3. Convergence, every criterion relative. ftol as MINPACK's: the last accepted step
    # gained less than ftol and the quadratic model promises no more; after a rejected step
    # only the promise counts, against REJECTED_FTOL_FACTOR * ftol (the rejection was the
    # model's precision floor). A run of rejected or non-finite
    # trials blows the damping up: stalled, not converged.
    cost = eq.cost
    small_f = ~first & (
        (accept & (gn_gain <= prob.ftol * cost) & (actual <= prob.ftol * s.eq.cost))
        | (~accept & (gn_gain <= REJECTED_FTOL_FACTOR * prob.ftol * cost)))
    small_x = jnp.all(jnp.abs(gn_step) <= prob.xtol * (jnp.abs(x) + prob.xtol))
    small_g = jnp.max(jnp.abs(projected_grad)) <= prob.gtol * jnp.sqrt(2 * cost)
    status = jnp.select(
        [first & ~finite, small_g, small_f, small_x, s.step + 1 >= prob.max_steps,
         lam > _MAX_DAMPING],
        [FitStatus.NON_FINITE, FitStatus.CONVERGED_GTOL, FitStatus.CONVERGED_FTOL,
         FitStatus.CONVERGED_XTOL, FitStatus.MAX_STEPS, FitStatus.STALLED], 0)
    return _State(x, eq, trial, lam, nu, predicted, s.step + 1,
                  s.n_accepted + (accept & ~first).astype(jnp.int32), status.astype(jnp.int32))


def _final_status(model: Model, prob: _Problem, final: _State, bad, periodic_phi: bool):
    """The loop's status made honest, and which parameters rest on a bound."""
    x = final.x
    width = prob.ub - prob.lb
    margin = jnp.where(jnp.isfinite(width), _BOUND_TOL * width, 0.0)
    at_lower = jnp.isfinite(prob.step_lb) & (x <= prob.step_lb + margin)
    at_upper = jnp.isfinite(prob.step_ub) & (x >= prob.step_ub - margin)
    # Internal fluxes are linear: judge flux floors on the linear-flux model.
    dec_lower, dec_upper = decisive_bounds(model.replace(log_weight_scale=False), prob.ub,
                                           periodic_phi, prob.lb, final.eq.jtj)
    decisive = jnp.any((at_lower & dec_lower) | (at_upper & dec_upper))
    # The galaxy touches no weighted pixel (every flux column zero): nothing was fitted.
    eps = 10 * jnp.finfo(x.dtype).eps
    diag = jnp.diag(final.eq.jtj)
    n = model.n_gauss
    visible = jnp.any(diag[4:4 + n] > eps * eps * jnp.max(diag))
    status = final.status
    no_step = (final.n_accepted == 0) & ((status == FitStatus.STALLED) |
                                         (status == FitStatus.MAX_STEPS))
    status = jnp.where((~visible | no_step) & (status != FitStatus.NON_FINITE),
                       FitStatus.NO_PROGRESS, status)
    status = jnp.where((status > 0) & decisive, FitStatus.AT_BOUND, status)
    finite = jnp.all(jnp.isfinite(x)) & jnp.isfinite(final.eq.cost)
    status = jnp.where(finite, status, FitStatus.NON_FINITE)
    status = jnp.where(bad, FitStatus.BAD_INPUT, status)
    return status.astype(jnp.int32), at_lower & ~bad, at_upper & ~bad


def solve_with(model: Model, data, weight, x0, lb, ub, options: SolverOptions,
               periodic_phi: bool, layout) -> FitResult:
    """The solver on data laid out as ``layout`` says (a whole image, or a stack of tiles).

    ``layout`` provides ``scale(data, weight)`` (:func:`data_scale`, or the same computed
    beforehand), ``pad(array)`` (the data's working layout, extra entries of zero weight),
    ``equations(model, x, data, sqrt_w)`` (:class:`NormalEquations` over the laid-out data)
    and ``residuals(model, x, data, sqrt_w)`` (the residual array, in the layout the caller
    reads back). ``data`` and ``weight`` are read element by element otherwise, so any array
    shape works.
    """
    dtype = model.dtype
    lin = model.replace(log_weight_scale=False)
    data, weight, x0, lb, ub = (jnp.asarray(v, dtype) for v in (data, weight, x0, lb, ub))
    bad = bad_input(data, weight, x0, lb, ub, periodic_phi)
    data, weight = usable_data(data, weight)
    scale = layout.scale(data, weight)
    data_n = layout.pad(data / scale)
    sqrt_w = layout.pad(jnp.sqrt(weight) * scale)  # residuals keep their units
    lb_i, ub_i = _to_internal(model, lb, scale), _to_internal(model, ub, scale)
    x_start = _canonical(_to_internal(model, x0, scale), lb_i, ub_i, periodic_phi)
    step_lb, step_ub = _open_bounds(lb_i, ub_i, periodic_phi)
    eps = float(10 * jnp.finfo(dtype).eps)
    # Tolerances below the working precision would never be met (float32).
    ftol, xtol, gtol = (max(float(t), eps) for t in (options.ftol, options.xtol, options.gtol))
    prob = _Problem(lb_i, ub_i, step_lb, step_ub, ftol, xtol, gtol, float(options.damping),
                    int(options.max_steps))

    def evaluate(x):
        return layout.equations(lin, x, data_n, sqrt_w)

    n = model.n_params
    zero_eq = NormalEquations(jnp.asarray(jnp.inf, dtype), jnp.zeros((n, n), dtype),
                              jnp.zeros(n, dtype), jnp.asarray(False))
    init = _State(x_start, zero_eq, x_start, jnp.asarray(options.damping, dtype),
                  jnp.asarray(2.0, dtype), jnp.asarray(0.0, dtype), jnp.asarray(0, jnp.int32),
                  jnp.asarray(0, jnp.int32),
                  jnp.where(bad, FitStatus.BAD_INPUT, FitStatus.RUNNING).astype(jnp.int32))
    final = jax.lax.while_loop(lambda s: s.status == 0,
                               lambda s: _body(prob, evaluate, periodic_phi, s), init)
    status, at_lower, at_upper = _final_status(model, prob, final, bad, periodic_phi)
    residuals = layout.residuals(lin, final.x, data_n, sqrt_w)
    chain = _internal_chain(model, final.x, scale)
    jtj = final.eq.jtj * chain[:, None] * chain[None, :]
    x = jnp.where(bad, x0, _from_internal(model, final.x, scale))
    return FitResult(x, 2.0 * final.eq.cost, jtj, residuals, final.step, status, at_lower,
                     at_upper)


class _RowBands(NamedTuple):
    """A whole image, evaluated in bands of rows (:mod:`imcascade_jax.normal_equations`)."""

    plan: BandPlan

    def scale(self, data, weight):
        return data_scale(data, weight)

    def pad(self, image):
        return pad_rows(image, self.plan)

    def equations(self, model, x, data, sqrt_w):
        return normal_equations(model, piece_model_and_jacobian, x, data, sqrt_w, self.plan)

    def residuals(self, model, x, data, sqrt_w):
        return residual_image(model, x, data, sqrt_w, self.plan)


def _solve(model: Model, data, weight, x0, lb, ub, options: SolverOptions,
           periodic_phi: bool) -> FitResult:
    layout = _RowBands(band_plan(model.shape, options.band_pixels))
    return solve_with(model, data, weight, x0, lb, ub, options, periodic_phi, layout)


def least_squares(model: Model, data: jax.Array, weight: jax.Array, x0: jax.Array,
                  lb: jax.Array, ub: jax.Array, options: SolverOptions = DEFAULT_OPTIONS,
                  periodic_phi: bool = True) -> FitResult:
    """Fit a model to an image by bounded, weighted least squares.

    Pure and traceable: wrap it in ``jax.jit`` (``options`` and ``periodic_phi`` static) and
    ``jax.vmap`` it over images of one shape. Internally the fluxes are linear (the problem is
    then linear in N + Ndof_sky of its parameters) and, with the sky, in units of
    :func:`data_scale`; ``x``, bounds and ``jtj`` use the model's own parametrisation (log10
    fluxes when ``model.log_weight_scale``).

    Parameters
    ----------
    model : Model
    data, weight : jax.Array, shape model.shape
        Image and pixel weights (inverse variance; 0 for masked pixels).
    x0, lb, ub : jax.Array, shape (Ndof,)
        Starting point and bounds (``lb <= x0 <= ub``); centre in pixel coordinates (axis 0,
        axis 1), phi in radians from axis 0 towards axis 1.
    options : SolverOptions
    periodic_phi : bool
        Treat the position angle as periodic (wrapped into ``[lb[3], lb[3] + pi)``) and, when
        ``ub[2] >= 1``, reflect an axis ratio q > 1 to 1/q with phi + pi/2 instead of clipping
        (only meaningful when the phi bounds span pi, as the defaults do).

    Returns
    -------
    FitResult
        ``status`` is an ``int(FitStatus)``: ``BAD_INPUT`` for an impossible problem given as
        traced arrays (what raises for concrete ones, below).

    Raises
    ------
    ValueError
        Shapes that do not fit the model; and, for concrete (untraced) arrays: ``lb > ub`` or
        NaN bounds, ``x0`` non-finite or outside the bounds (a periodic phi excepted),
        ``weight`` negative, non-finite or zero everywhere, ``data`` non-finite where the
        weight is positive.
    """
    check_shapes(model, data, weight, x0, lb, ub)
    if is_concrete(data, weight, x0, lb, ub):
        check_problem(model, data, weight, x0, lb, ub, periodic_phi)
    return _solve(model, data, weight, x0, lb, ub, options, periodic_phi)


_solve_jit = jax.jit(_solve, static_argnames=("options", "periodic_phi"))
#: The compiled solver without the eager input checks (``.lower(...)`` for ahead-of-time
#: compilation of a problem checked beforehand).
solve_jit = _solve_jit


def least_squares_jit(model: Model, data: jax.Array, weight: jax.Array, x0: jax.Array,
                      lb: jax.Array, ub: jax.Array, options: SolverOptions = DEFAULT_OPTIONS,
                      periodic_phi: bool = True) -> FitResult:
    """:func:`least_squares`, compiled once per image shape, model structure and options.

    Concrete inputs are checked (and raise) as in :func:`least_squares` before the compiled
    solver runs.
    """
    check_shapes(model, data, weight, x0, lb, ub)
    if is_concrete(data, weight, x0, lb, ub):
        check_problem(model, data, weight, x0, lb, ub, periodic_phi)
    return _solve_jit(model, data, weight, x0, lb, ub, options, periodic_phi)


least_squares_jit._cache_size = _solve_jit._cache_size  # the compiled programs held
