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
- everything is one ``lax.while_loop``: the fit compiles once per image shape and model, runs
  without Python in the loop, and ``jax.vmap`` turns it into a batched catalog fit. Failures come
  back as a status code, never as exceptions.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from imcascade_jax.derivatives import (
    basis_and_tangents,
    basis_and_tangents_autodiff,
    supports_closed_form,
)
from imcascade_jax.model import Model
from imcascade_jax.params import unpack
from imcascade_jax.render import render_basis, render_sky, weighted_sum

#: Status codes of :class:`FitResult`.
STATUS_MESSAGES = {
    0: "running",
    1: "converged: relative reduction of chi2 below ftol",
    2: "converged: relative step below xtol",
    3: "converged: projected gradient below gtol",
    -1: "stopped: maximum number of steps reached",
    -2: "failed: non-finite residuals or Jacobian",
}
_LN10 = 2.302585092994046


class SolverOptions(NamedTuple):
    """Options of :func:`least_squares` (the keys ``Fitter.run_ls_min(ls_kwargs)`` accepts).

    Attributes
    ----------
    max_steps : int
        Maximum number of Levenberg-Marquardt steps (each one Jacobian evaluation).
    ftol : float
        Stop when an accepted step reduces chi2 by less than ``ftol`` relative.
    xtol : float
        Stop when the step is smaller than ``xtol * (|x| + xtol)``.
    gtol : float
        Stop when the largest scaled projected gradient is below ``gtol``.
    damping : float
        Initial damping, relative to the diagonal of ``J^T J``.
    """

    max_steps: int = 100
    ftol: float = 1e-8
    xtol: float = 1e-8
    gtol: float = 1e-8
    damping: float = 1e-3


DEFAULT_OPTIONS = SolverOptions()
_OPTION_ALIASES = {"max_nfev": "max_steps"}


def solver_options(kwargs: dict) -> SolverOptions:
    """Build :class:`SolverOptions` from a dict (``Fitter.run_ls_min``'s ``ls_kwargs``).

    Raises
    ------
    ValueError
        For a key that is not an option (scipy-only options such as ``method`` or ``loss``
        have no equivalent here).
    """
    opts = {}
    for key, value in kwargs.items():
        name = _OPTION_ALIASES.get(key, key)
        if name not in SolverOptions._fields:
            raise ValueError(f"unknown least-squares option {key!r} in 'ls_kwargs'; valid options "
                             f"are {list(SolverOptions._fields) + list(_OPTION_ALIASES)}")
        opts[name] = int(value) if name == "max_steps" else float(value)
    return SolverOptions(**opts)


class FitResult(NamedTuple):
    """Outcome of :func:`least_squares` (a pytree; batched under ``vmap``).

    Attributes
    ----------
    x : jax.Array
        Best parameters, shape ``(Ndof,)``.
    chi2 : jax.Array
        ``sum(w (data - model)^2)`` at ``x``.
    jac : jax.Array
        Jacobian of the residuals ``sqrt(w) (data - model)`` at ``x``, shape ``(Ndof, nx, ny)``.
    jtj : jax.Array
        ``J^T J`` at ``x`` (its inverse is the covariance of the parameters for unit weights).
    residuals : jax.Array
        ``sqrt(w) (data - model)`` at ``x``, shape model.shape.
    n_steps : jax.Array
        Number of steps taken.
    status : jax.Array
        A key of :data:`STATUS_MESSAGES`; > 0 converged.
    """

    x: jax.Array
    chi2: jax.Array
    jac: jax.Array
    jtj: jax.Array
    residuals: jax.Array
    n_steps: jax.Array
    status: jax.Array


def model_and_jacobian(model: Model, param: jax.Array):
    """Model image and its Jacobian with respect to the flat parameter vector.

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
        _, d_structural = basis_and_tangents(model, p.x0, p.y0, p.q, p.phi, p.flux)
        # The basis from the renderer, not from basis_and_tangents (whose copy is then dead
        # code): with that copy feeding both the image and the concatenated Jacobian, XLA fused
        # its pixel correction into the concatenation, which the CPU backend does not
        # vectorise: 13.5 ms against 4.7 ms per Jacobian of the 150x150 quickstart.
        basis = render_basis(model, p.x0, p.y0, p.q, p.phi)
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


def _residuals(model, param, data, sqrt_w):
    image, dimage = model_and_jacobian(model, param)
    return sqrt_w * (data - image), -sqrt_w[None] * dimage


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


class _State(NamedTuple):
    x: jax.Array  # accepted point and what was evaluated there
    r: jax.Array
    jac: jax.Array
    cost: jax.Array
    trial: jax.Array  # next point to evaluate
    lam: jax.Array
    nu: jax.Array
    predicted: jax.Array  # reduction of cost the linear model predicts for the trial
    step: jax.Array
    status: jax.Array


def _to_internal(model: Model, v):
    """Log10 fluxes -> linear: Gauss-Newton is exact in linear parameters, so the N fluxes
    converge in one step instead of crawling along log-space curvature (50 steps -> ~20)."""
    if not model.log_weight_scale:
        return v
    n = model.n_gauss
    return v.at[4:4 + n].set(jnp.power(10.0, v[4:4 + n]))


def _from_internal(model: Model, v):
    if not model.log_weight_scale:
        return v
    n = model.n_gauss
    return v.at[4:4 + n].set(jnp.log10(v[4:4 + n]))


def least_squares(model: Model, data: jax.Array, weight: jax.Array, x0: jax.Array,
                  lb: jax.Array, ub: jax.Array, options: SolverOptions = DEFAULT_OPTIONS,
                  periodic_phi: bool = True) -> FitResult:
    """Fit a model to an image by bounded, weighted least squares.

    Pure and traceable: wrap it in ``jax.jit`` (``options`` and ``periodic_phi`` static) and
    ``jax.vmap`` it over images of one shape. Internally the fluxes are linear (the problem is
    then linear in N + Ndof_sky of its parameters); ``x``, bounds and the returned Jacobian use
    the model's own parametrisation (log10 fluxes when ``model.log_weight_scale``).

    Parameters
    ----------
    model : Model
    data, weight : jax.Array, shape model.shape
        Image and pixel weights (inverse variance; 0 for masked pixels).
    x0, lb, ub : jax.Array, shape (Ndof,)
        Starting point and bounds (``lb <= x0 <= ub``).
    options : SolverOptions
    periodic_phi : bool
        Treat the position angle as periodic (wrapped into ``[lb[3], lb[3] + pi)``) and, when
        ``ub[2] >= 1``, reflect an axis ratio q > 1 to 1/q with phi + pi/2 instead of clipping
        (only meaningful when the phi bounds span pi, as the defaults do).

    Returns
    -------
    FitResult
    """
    dtype = model.dtype
    lin = model.replace(log_weight_scale=False)
    data = jnp.asarray(data, dtype)
    sqrt_w = jnp.sqrt(jnp.asarray(weight, dtype))
    lb = _to_internal(model, jnp.asarray(lb, dtype))
    ub = _to_internal(model, jnp.asarray(ub, dtype))
    x_start = _canonical(_to_internal(model, jnp.asarray(x0, dtype)), lb, ub, periodic_phi)
    step_lb, step_ub = _open_bounds(lb, ub, periodic_phi)
    tiny = jnp.finfo(dtype).tiny
    eps = 10 * jnp.finfo(dtype).eps
    n_par = model.n_params
    # Tolerances below the working precision would never be met (float32).
    ftol, xtol, gtol = (max(float(t), float(eps)) for t in (options.ftol, options.xtol, options.gtol))

    def normal_equations(jac, r):
        jtj = jnp.einsum("axy,bxy->ab", jac, jac)
        grad = jnp.einsum("axy,xy->a", jac, r)
        return jtj, grad

    def free_mask(x, grad):
        at_lower = (x <= step_lb + eps * (1 + jnp.abs(step_lb))) & (grad > 0)
        at_upper = (x >= step_ub - eps * (1 + jnp.abs(step_ub))) & (grad < 0)
        return ~(at_lower | at_upper)

    def body(s: _State) -> _State:
        # 1. Evaluate the trial point; accept it if it lowers the cost (the first one always).
        r_t, jac_t = _residuals(lin, s.trial, data, sqrt_w)
        cost_t = 0.5 * jnp.sum(r_t * r_t)
        finite = jnp.isfinite(cost_t) & jnp.all(jnp.isfinite(jac_t))
        actual = s.cost - cost_t
        first = s.step == 0
        accept = finite & ((actual > 0) | first)
        rho = actual / jnp.maximum(s.predicted, tiny)
        lam = jnp.where(first, s.lam, jnp.where(
            accept, s.lam * jnp.maximum(1.0 / 3.0, 1.0 - (2.0 * rho - 1.0) ** 3), s.lam * s.nu))
        nu = jnp.where(accept, 2.0, 2.0 * s.nu)
        pick = lambda new, old: jnp.where(accept, new, old)  # noqa: E731
        x, r, jac, cost = pick(s.trial, s.x), pick(r_t, s.r), pick(jac_t, s.jac), \
            pick(cost_t, s.cost)

        # 2. Next trial: a damped Gauss-Newton step on the free variables, projected.
        jtj, grad = normal_equations(jac, r)
        # A parameter the image does not depend on here (phi of a round model, q = 1) has a
        # zero column: hold it this step rather than solve a singular system.
        raw_diag = jnp.diag(jtj)
        free = free_mask(x, grad) & (raw_diag > eps * eps * jnp.max(raw_diag))
        diag = jnp.maximum(raw_diag, tiny)
        # Solve in columns scaled to unit norm (Marquardt): sky slopes and fluxes differ by
        # ~1e10 in J^T J, which float32 cannot solve unscaled.
        scale = 1.0 / jnp.sqrt(diag)
        ff = free[:, None] & free[None, :]
        a = jnp.where(ff, jtj * scale[:, None] * scale[None, :] + lam * jnp.eye(n_par, dtype=dtype),
                      0.0) + jnp.diag(jnp.where(free, 0.0, 1.0))
        delta = scale * jnp.linalg.solve(a, -jnp.where(free, grad * scale, 0.0))
        step = jnp.clip(x + delta, step_lb, step_ub) - x
        trial = _canonical(x + step, lb, ub, periodic_phi)
        predicted = -(grad @ step + 0.5 * step @ jtj @ step)

        # 3. Convergence.
        # As MINPACK: converged when the last accepted step gained less than ftol (relative)
        # and the quadratic model promises no more than that for the next one, so no
        # Jacobian is spent on a trial that cannot matter.
        small_f = accept & ~first & (actual <= ftol * s.cost) & \
            (predicted <= ftol * cost)
        small_x = jnp.linalg.norm(step) <= xtol * (jnp.linalg.norm(x) + xtol)
        proj_grad = jnp.where(free, grad, 0.0) / jnp.sqrt(diag)
        small_g = jnp.max(jnp.abs(proj_grad)) <= gtol * jnp.sqrt(2 * cost + tiny)
        status = jnp.select(
            [first & ~finite, small_g, small_f, small_x, s.step + 1 >= options.max_steps,
             lam > 1e16],
            [-2, 3, 1, 2, -1, 2], 0)
        return _State(x, r, jac, cost, trial, lam, nu, predicted, s.step + 1,
                      status.astype(jnp.int32))

    shape = model.shape
    zeros_img = jnp.zeros(shape, dtype)
    init = _State(x_start, zeros_img, jnp.zeros((model.n_params, *shape), dtype),
                  jnp.asarray(jnp.inf, dtype), x_start, jnp.asarray(options.damping, dtype),
                  jnp.asarray(2.0, dtype), jnp.asarray(0.0, dtype), jnp.asarray(0, jnp.int32),
                  jnp.asarray(0, jnp.int32))
    final = jax.lax.while_loop(lambda s: s.status == 0, body, init)
    jtj_lin, _ = normal_equations(final.jac, final.r)
    x = _from_internal(model, final.x)
    if model.log_weight_scale:
        # Chain rule back to log10 fluxes for the returned Jacobian.
        n = model.n_gauss
        scale = jnp.ones(model.n_params, dtype).at[4:4 + n].set(final.x[4:4 + n] * _LN10)
        jac = final.jac * scale[:, None, None]
        jtj = jtj_lin * scale[:, None] * scale[None, :]
    else:
        jac, jtj = final.jac, jtj_lin
    return FitResult(x, 2.0 * final.cost, jac, jtj, final.r, final.step, final.status)


least_squares_jit = jax.jit(least_squares, static_argnames=("options", "periodic_phi"))
