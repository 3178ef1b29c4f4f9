"""Joint least squares of a multi-band model: one shared geometry, linear fluxes per band.

The model is linear in the fluxes and skies of every band and nonlinear only in the shared
geometry ``g = (x0, y0, q, phi)``. The solver is variable projection: at each geometry every
band's fluxes and sky are solved exactly (a small non-negative least-squares problem on its
Gram matrix, fluxes >= 0, sky free: :func:`nnls`), and a Levenberg-Marquardt method moves the
four geometry parameters along the reduced (Kaufman) Gauss-Newton direction

    H = sum_b J_b^T W_b J_b - (Phi_b^T W_b J_b)^T G_b^-1 (Phi_b^T W_b J_b),   grad = sum_b J_b^T W_b r_b

with ``J_b`` the band image's derivative wrt ``g`` at the solved fluxes (closed form,
:func:`band_image_tangents`), ``Phi_b`` the band's basis (components then sky planes) restricted
to the coefficients not held at zero, and ``G_b = Phi_b^T W_b Phi_b``. Where the closed form
applies, a step's basis and ``J_b`` come from the same pair images (:func:`band_pair_images`):
one exponential per (component, PSF component) pair and pixel serves both. Bands may have
different shapes: the loop over bands is unrolled at trace time, each band finished before the
next starts. The whole fit is one ``lax.while_loop``; the outcome is a
:class:`~imcascade_jax.status.FitStatus` code, never an exception.

Geometry bounds: the centre and the axis-ratio floor are clipped; an axis ratio above 1 is
reflected (``q -> 1/q``, ``phi -> phi + pi/2``) and the angle is wrapped into ``[0, pi)``.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from imcascade_jax.derivatives import supports_closed_form, values_and_tangents
from imcascade_jax.fit import DEFAULT_OPTIONS, REJECTED_FTOL_FACTOR, SolverOptions
from imcascade_jax.likelihood import gaussian_log_like
from imcascade_jax.multiband.model import (
    Band,
    MultiBandModel,
    MultiParams,
    render_band_basis,
    render_bands,
    sky_basis,
)
from imcascade_jax.render import covariances, psf_weighted, weighted_sum
from imcascade_jax.status import FitStatus


def joint_log_like(mb: MultiBandModel, data: tuple, weights: tuple, params: MultiParams) -> jax.Array:
    """Gaussian log-likelihood of every band's image, summed over bands.

    Each band's term is :func:`imcascade_jax.likelihood.gaussian_log_like` (normalised over its
    pixels with ``weight > 0``); differentiable in every parameter (geometry, fluxes, skies).
    """
    images = render_bands(mb, params)
    return sum(gaussian_log_like(m, jnp.asarray(d, mb.dtype), jnp.asarray(w, mb.dtype))
               for m, d, w in zip(images, data, weights, strict=True))


def nnls(gram: jax.Array, rhs: jax.Array, nonneg: jax.Array, max_iter: int | None = None) -> jax.Array:
    """Minimise ``c^T G c / 2 - rhs.c`` subject to ``c_i >= 0`` where ``nonneg`` (Lawson-Hanson).

    The active-set method of Lawson & Hanson, extended to unconstrained entries (always in the
    passive set). Solved in Jacobi-scaled coordinates: sky slopes and fluxes differ by many
    orders of magnitude in ``G``. Traceable (one ``lax.while_loop``), so it compiles into fits.

    Parameters
    ----------
    gram : jax.Array, shape (K, K)
        Symmetric positive (semi-)definite Gram matrix ``Phi^T W Phi``.
    rhs : jax.Array, shape (K,)
        ``Phi^T W d``.
    nonneg : array of bool, shape (K,)
        Which coefficients are constrained to be >= 0 (static pattern, traced values fine).
    max_iter : int, optional
        Iterations, each one linear solve (default ``4 K + 2``).

    Returns
    -------
    jax.Array, shape (K,)
        The constrained minimiser.
    """
    k = gram.shape[0]
    dtype = gram.dtype
    max_iter = 4 * k + 2 if max_iter is None else max_iter
    d = 1.0 / jnp.sqrt(jnp.maximum(jnp.diag(gram), jnp.finfo(dtype).tiny))
    g = gram * d[:, None] * d[None, :]
    h = rhs * d
    nonneg = jnp.asarray(nonneg, bool)
    eye = jnp.eye(k, dtype=dtype)
    tol = 10 * k * jnp.finfo(dtype).eps * jnp.maximum(1.0, jnp.max(jnp.abs(h)))

    def solve_on(passive):
        pp = passive[:, None] & passive[None, :]
        a = jnp.where(pp, g, 0.0) + jnp.where(passive, 0.0, 1.0) * eye
        return jnp.where(passive, jnp.linalg.solve(a, jnp.where(passive, h, 0.0)), 0.0)

    def body(state):
        # One linear solve per iteration (one solve in the compiled graph): either the passive
        # solution is feasible and the most promising held coefficient is freed, or the step
        # towards it stops at the first coefficient to reach zero, which is then held.
        c, passive, it, _ = state
        z = solve_on(passive)
        bad = nonneg & passive & (z <= 0.0)
        infeasible = jnp.any(bad)
        alpha = jnp.min(jnp.where(bad, c / jnp.maximum(c - z, jnp.finfo(dtype).tiny), jnp.inf))
        shrunk = c + jnp.minimum(alpha, 1.0) * (z - c)
        kept = passive & ~(nonneg & (shrunk <= tol))
        w = h - g @ z
        cand = nonneg & ~passive & (w > tol)
        freed = passive | (cand & (jnp.arange(k) == jnp.argmax(jnp.where(cand, w, -jnp.inf))))
        c = jnp.where(infeasible, jnp.where(kept, shrunk, 0.0), z)
        passive = jnp.where(infeasible, kept, freed)
        return c, passive, it + 1, ~infeasible & ~jnp.any(cand)

    state = (jnp.zeros(k, dtype), ~nonneg, 0, jnp.asarray(False))
    c, _, _, _ = jax.lax.while_loop(lambda s: ~s[3] & (s[2] < max_iter), body, state)
    return c * d


class MultiFitResult(NamedTuple):
    """Outcome of :func:`joint_least_squares` (a pytree).

    Attributes
    ----------
    params : MultiParams
        Best geometry (reference frame), fluxes ``(B, N)`` and skies.
    chi2 : jax.Array
        ``sum_b sum(w_b (d_b - model_b)^2)``.
    chi2_bands : jax.Array, shape (B,)
        Each band's share of ``chi2``.
    hessian : jax.Array, shape (4, 4)
        Reduced Gauss-Newton matrix of ``chi2 / 2`` in the geometry (fluxes profiled out):
        its inverse is the covariance of ``(x0, y0, q, phi)``.
    n_steps : jax.Array
    status : jax.Array
        A :class:`~imcascade_jax.status.FitStatus` code.
    """

    params: MultiParams
    chi2: jax.Array
    chi2_bands: jax.Array
    hessian: jax.Array
    n_steps: jax.Array
    status: jax.Array


class _Eval(NamedTuple):
    cost: jax.Array
    costs: jax.Array
    hess: jax.Array
    grad: jax.Array
    coefs: tuple


def _shape_matrices(A, q, phi):
    """``M = A R diag(1, q^2) R^T A^T`` and its derivatives wrt q and phi, as (xx, xy, yy)."""
    c, s = jnp.cos(phi), jnp.sin(phi)
    rot = jnp.array([[c, -s], [s, c]])
    d_rot = jnp.array([[-s, -c], [c, -s]])
    diag = jnp.diag(jnp.stack([jnp.ones_like(q), q * q]))
    m = A @ rot @ diag @ rot.T @ A.T
    m_q = A @ rot @ jnp.diag(jnp.stack([jnp.zeros_like(q), 2.0 * q])) @ rot.T @ A.T
    half = A @ d_rot @ diag @ rot.T @ A.T
    m_phi = half + half.T
    return tuple((x[0, 0], x[0, 1], x[1, 1]) for x in (m, m_q, m_phi))


def band_pair_images(mb: MultiBandModel, index: int, geometry: jax.Array) -> tuple[jax.Array, ...]:
    """Images of every (component, PSF component) pair of band ``index`` and their derivatives.

    Closed form (:func:`imcascade_jax.derivatives.values_and_tangents`): one exponential per
    pair and pixel serves the images and all four derivatives. In band pixels component ``k``
    convolved with PSF component ``j`` has covariance ``sig_k^2 M + C_psf,j`` with
    ``M = A R diag(1, q^2) R^T A^T``, so its q and phi derivatives are ``sig_k^2 dM``.
    ``supports_closed_form`` must hold for the band's model.

    Parameters
    ----------
    mb : MultiBandModel
    index : int
        Band position (static).
    geometry : jax.Array, shape (4,)
        Reference-frame ``(x0, y0, q, phi)``.

    Returns
    -------
    tuple of five jax.Array, each shape (N * P, nx, ny)
        Unit-flux pair images (pair ``(k, j)`` at ``k * P + j``; weighted by the PSF's ``a_j``
        and summed over ``j`` they are :func:`render_band_basis`'s images), then their
        derivatives wrt the band-pixel centre (axis 0, axis 1), q and phi.
    """
    band = mb.bands[index]
    model = band.model
    x0, y0, q, phi = geometry
    nx, ny = model.shape
    A = band.A
    xb = A[0, 0] * x0 + A[0, 1] * y0 + band.t[0]
    yb = A[1, 0] * x0 + A[1, 1] * y0 + band.t[1]
    m, m_q, m_phi = _shape_matrices(A, q, phi)
    # The PSF's covariance entries: the covariances of zero-width galaxy components.
    psf = covariances(model.replace(sig=jnp.zeros_like(mb.sig)), 1.0, 0.0)
    var = mb.sig**2
    cov = tuple((var[:, None] * mk + pk).ravel() for mk, pk in zip(m, psf, strict=True))
    along = lambda dm: tuple(jnp.repeat(var * d, model.n_psf) for d in dm)  # noqa: E731
    dx = jnp.arange(nx, dtype=mb.dtype) - xb
    dy = jnp.arange(ny, dtype=mb.dtype) - yb
    return values_and_tangents(dx, dy, cov, along(m_q), along(m_phi),
                               hybrid=model.render_mode == "hybrid")


def pair_tangents(band: Band, flux: jax.Array, derivatives: tuple[jax.Array, ...]) -> jax.Array:
    """Derivatives of ``sum_k flux_k basis_k`` wrt the reference geometry from :func:`band_pair_images`.

    Each derivative image is one weighted sum over all (component, PSF component) pairs
    (weights ``flux_k a_j``); the centre derivatives are the band's, pulled back through ``A^T``.

    Parameters
    ----------
    band : Band
        The band the pair images belong to.
    flux : jax.Array, shape (N,)
        Linear fluxes of the band's components.
    derivatives : tuple of four jax.Array
        The pair images' derivatives, :func:`band_pair_images`' output without its first entry.

    Returns
    -------
    jax.Array, shape (4, nx, ny)
        ``d image / d (x0, y0, q, phi)``.
    """
    A = band.A
    coef = (flux[:, None] * band.model.psf_a[None, :]).ravel()
    d_xb, d_yb, d_q, d_phi = (weighted_sum(coef, o) for o in derivatives)
    d_x0 = A[0, 0] * d_xb + A[1, 0] * d_yb
    d_y0 = A[0, 1] * d_xb + A[1, 1] * d_yb
    return jnp.stack([d_x0, d_y0, d_q, d_phi])


def band_image_tangents(mb: MultiBandModel, index: int, geometry: jax.Array,
                        flux: jax.Array) -> jax.Array:
    """Derivatives of band ``index``'s galaxy image ``sum_k flux_k basis_k`` wrt the geometry.

    Closed form (:func:`band_pair_images`, :func:`pair_tangents`) where the band's render mode
    allows it, forward-mode autodiff otherwise.

    Parameters
    ----------
    mb : MultiBandModel
    index : int
        Band position (static).
    geometry : jax.Array, shape (4,)
        Reference-frame ``(x0, y0, q, phi)``.
    flux : jax.Array, shape (N,)
        Linear fluxes of the band's components.

    Returns
    -------
    jax.Array, shape (4, nx, ny)
        ``d image / d (x0, y0, q, phi)``.
    """
    if not supports_closed_form(mb.bands[index].model):
        def image(s):
            return weighted_sum(flux, render_band_basis(mb, index, s))

        _, push = jax.linearize(image, geometry)
        return jax.vmap(push)(jnp.eye(4, dtype=geometry.dtype))
    return pair_tangents(mb.bands[index], flux, band_pair_images(mb, index, geometry)[1:])


def _basis_and_derivatives(mb: MultiBandModel, index: int, geometry):
    """The band's basis and its pair images' derivatives, materialised once (closed form).

    Computed in a conditional branch, taken unless the geometry holds a NaN (every image is
    then NaN, as the renderer's would be). XLA does not fuse a branch's outputs into their
    consumers: the basis's pixel corrections are computed once rather than again in each of
    its consumers (Gram matrix, right-hand side, residuals), and the exponentials, shared by
    the basis and the derivatives, are not stored between them.
    """
    model = mb.bands[index].model
    n, p = mb.n_gauss, model.n_psf

    def images():
        pairs = band_pair_images(mb, index, geometry)
        basis = psf_weighted(pairs[0].reshape(n, p, *model.shape), model.psf_a)
        return basis, pairs[1:]

    def nans():
        return jax.tree_util.tree_map(lambda a: jnp.full(a.shape, jnp.nan, a.dtype),
                                      jax.eval_shape(images))

    return jax.lax.cond(~jnp.any(jnp.isnan(geometry)), images, nans)


def _band_terms(mb: MultiBandModel, index: int, geometry, data, weight, sky_imgs):
    """Solved coefficients, cost, reduced Hessian and gradient of one band at ``geometry``."""
    n = mb.n_gauss
    band = mb.bands[index]
    closed = supports_closed_form(band.model)
    if closed:
        # One exponential per pair and pixel serves the basis now and the derivatives once
        # the fluxes are solved.
        basis, derivatives = _basis_and_derivatives(mb, index, geometry)
    else:
        # Without the barrier XLA fuses the basis's exponentials into each of their consumers
        # (Gram matrix, right-hand side, residuals) and evaluates them again.
        basis = jax.lax.optimization_barrier(render_band_basis(mb, index, geometry))
    phi = jnp.concatenate([basis, sky_imgs], axis=0)
    k = phi.shape[0]
    flat = phi.reshape(k, -1)
    w = weight.reshape(-1)
    gram = (flat * w) @ flat.T
    nonneg = jnp.arange(k) < n
    coef = nnls(gram, flat @ (w * data.reshape(-1)), nonneg)
    resid = data - weighted_sum(coef, phi)
    cost = 0.5 * jnp.sum(weight * resid * resid)
    jac = (pair_tangents(band, coef[:n], derivatives) if closed
           else band_image_tangents(mb, index, geometry, coef[:n]))  # d model / d g
    jac = jac.reshape(4, -1)
    # Every contraction with the derivative images in one product: rows (basis, derivatives)
    # against columns (derivatives, residuals), each weighted.
    prod = (jnp.concatenate([flat, jac]) * w) @ jnp.concatenate([jac, resid.reshape(1, -1)]).T
    grad = -prod[k:, 4]
    # Fluxes held at zero are not free directions of the linear problem.
    free = ~nonneg | (coef > 0)
    ff = free[:, None] & free[None, :]
    g_free = jnp.where(ff, gram, 0.0) + jnp.diag(jnp.where(free, 0.0, 1.0))
    cross = jnp.where(free[:, None], prod[:k, :4], 0.0)  # (K, 4)
    scale = 1.0 / jnp.sqrt(jnp.maximum(jnp.diag(g_free), jnp.finfo(gram.dtype).tiny))
    proj = scale[:, None] * jnp.linalg.solve(g_free * scale[:, None] * scale[None, :],
                                             cross * scale[:, None])
    hess = prod[k:, :4] - cross.T @ proj
    return coef, cost, hess, grad


def _evaluate(mb, geometry, data, weights, sky_imgs) -> _Eval:
    out, g = [], geometry
    for i in range(mb.n_bands):
        terms = _band_terms(mb, i, g, data[i], weights[i], sky_imgs[i])
        # The next band starts once this one is done: one band's images in cache at a time,
        # where XLA would otherwise interleave the bands' renders (measured on three 150x150
        # bands: 15-25% faster per step).
        g, terms = jax.lax.optimization_barrier((geometry, terms))
        out.append(terms)
    costs = jnp.stack([o[1] for o in out])
    return _Eval(jnp.sum(costs), costs, sum(o[2] for o in out), sum(o[3] for o in out),
                 tuple(o[0] for o in out))


def _canonical(g, lb, ub):
    """Reflect q > 1 (q -> 1/q, phi + pi/2), wrap phi into [0, pi), clip centre and q floor."""
    q = g[2]
    flip = q > 1.0
    g = g.at[2].set(jnp.where(flip, 1.0 / q, q))
    g = g.at[3].set(jnp.mod(jnp.where(flip, g[3] + 0.5 * jnp.pi, g[3]), jnp.pi))
    return jnp.clip(g, lb, ub)


class _State(NamedTuple):
    g: jax.Array  # accepted geometry and its evaluation
    ev: _Eval
    trial: jax.Array  # next geometry to evaluate
    predicted: jax.Array  # reduction of the cost the quadratic model predicts for the trial
    lam: jax.Array
    nu: jax.Array
    step: jax.Array
    status: jax.Array


def joint_least_squares(mb: MultiBandModel, data: tuple, weights: tuple, geometry0: jax.Array,
                        lb: jax.Array, ub: jax.Array,
                        options: SolverOptions = DEFAULT_OPTIONS) -> MultiFitResult:
    """Fit every band at once: shared geometry, per-band fluxes (>= 0) and skies.

    Pure and traceable; :data:`joint_least_squares_jit` is the compiled version (``options``
    static).

    Parameters
    ----------
    mb : MultiBandModel
    data, weights : tuple of jax.Array
        Image and inverse-variance weights (0: masked) of each band, in ``mb.names`` order.
    geometry0 : jax.Array, shape (4,)
        Start ``(x0, y0, q, phi)`` in the reference frame.
    lb, ub : jax.Array, shape (4,)
        Bounds of the geometry. ``ub[2]`` is not used: q > 1 is reflected (see module notes),
        and phi is periodic (its bounds are not used either).
    options : SolverOptions
        ``max_steps``, ``ftol``, ``xtol``, ``gtol``, ``damping`` as for the single-band solver.

    Returns
    -------
    MultiFitResult
    """
    dtype = mb.dtype
    data = tuple(jnp.asarray(d, dtype) for d in data)
    weights = tuple(jnp.asarray(w, dtype) for w in weights)
    inf = jnp.asarray(jnp.inf, dtype)
    lb = jnp.asarray(lb, dtype).at[3].set(-inf)
    ub = jnp.asarray(ub, dtype).at[2].set(inf).at[3].set(inf)
    sky_imgs = tuple(sky_basis(mb, i) for i in range(mb.n_bands))
    eps = 10 * jnp.finfo(dtype).eps
    tiny = jnp.finfo(dtype).tiny
    ftol, xtol, gtol = (max(float(t), float(eps)) for t in (options.ftol, options.xtol, options.gtol))

    def body(s: _State) -> _State:
        # 1. Evaluate the trial (one traced evaluation); accept it if it lowers the cost.
        ev_t = _evaluate(mb, s.trial, data, weights, sky_imgs)
        finite = jnp.isfinite(ev_t.cost) & jnp.all(jnp.isfinite(ev_t.hess))
        first = s.step == 0
        actual = s.ev.cost - ev_t.cost
        accept = finite & ((actual > 0) | first)
        rho = actual / jnp.maximum(s.predicted, tiny)
        lam = jnp.where(first, s.lam, jnp.where(
            accept, s.lam * jnp.maximum(1.0 / 3.0, 1.0 - (2.0 * rho - 1.0) ** 3), s.lam * s.nu))
        nu = jnp.where(accept, 2.0, 2.0 * s.nu)
        ev = jax.tree_util.tree_map(lambda new, old: jnp.where(accept, new, old), ev_t, s.ev)
        g = jnp.where(accept, s.trial, s.g)
        # 2. Next trial: damped reduced Gauss-Newton step (Marquardt-scaled), into the box.
        # A direction the images do not depend on here (phi of a round galaxy) is held.
        raw = jnp.diag(ev.hess)
        free = raw > eps * eps * jnp.max(raw)
        scale = jnp.where(free, 1.0 / jnp.sqrt(jnp.maximum(raw, tiny)), 0.0)
        a = ev.hess * scale[:, None] * scale[None, :] + lam * jnp.eye(4, dtype=dtype) + \
            jnp.diag(jnp.where(free, 0.0, 1.0))
        delta = scale * jnp.linalg.solve(a, -ev.grad * scale)
        trial = _canonical(g + delta, lb, ub)
        step = trial - g
        predicted = -(ev.grad @ delta + 0.5 * delta @ ev.hess @ delta)
        # 3. Convergence (as the single-band solver).
        small_f = ~first & (
            (accept & (actual <= ftol * s.ev.cost) & (predicted <= ftol * ev.cost))
            | (~accept & (predicted <= REJECTED_FTOL_FACTOR * ftol * ev.cost)))
        small_x = jnp.linalg.norm(step) <= xtol * (jnp.linalg.norm(g) + xtol)
        small_g = jnp.max(jnp.abs(ev.grad * scale)) <= gtol * jnp.sqrt(2 * ev.cost + tiny)
        status = jnp.select(
            [first & ~finite, small_g, small_f, small_x, s.step + 1 >= options.max_steps,
             lam > 1e16],
            [FitStatus.NON_FINITE, FitStatus.CONVERGED_GTOL, FitStatus.CONVERGED_FTOL,
             FitStatus.CONVERGED_XTOL, FitStatus.MAX_STEPS, FitStatus.STALLED], FitStatus.RUNNING)
        return _State(g, ev, trial, predicted, lam, nu, s.step + 1, status.astype(jnp.int32))

    g0 = _canonical(jnp.asarray(geometry0, dtype), lb, ub)
    ev0 = jax.eval_shape(lambda: _evaluate(mb, g0, data, weights, sky_imgs))
    ev0 = jax.tree_util.tree_map(lambda a: jnp.full(a.shape, jnp.inf, a.dtype), ev0)
    init = _State(g0, ev0, g0, jnp.asarray(0.0, dtype), jnp.asarray(options.damping, dtype),
                  jnp.asarray(2.0, dtype), jnp.asarray(0, jnp.int32),
                  jnp.asarray(FitStatus.RUNNING, jnp.int32))
    final = jax.lax.while_loop(lambda s: s.status == FitStatus.RUNNING, body, init)
    return _result(mb, final, lb, ub, eps)


def _result(mb: MultiBandModel, final: _State, lb, ub, eps) -> MultiFitResult:
    """The fit's outcome; a converged fit with the centre or the q floor at a bound is AT_BOUND."""
    g = final.g
    at_bound = (jnp.any(g[:2] <= lb[:2] + eps * (1 + jnp.abs(lb[:2])))
                | jnp.any(g[:2] >= ub[:2] - eps * (1 + jnp.abs(ub[:2])))
                | (g[2] <= lb[2] + eps * (1 + jnp.abs(lb[2]))))
    status = jnp.where((final.status > 0) & at_bound, FitStatus.AT_BOUND, final.status)
    n = mb.n_gauss
    flux = jnp.stack([c[:n] for c in final.ev.coefs])
    sky = tuple(c[n:] for c in final.ev.coefs)
    params = MultiParams(g[0], g[1], g[2], g[3], flux, sky)
    return MultiFitResult(params, 2.0 * final.ev.cost, 2.0 * final.ev.costs, final.ev.hess,
                          final.step, status.astype(jnp.int32))


joint_least_squares_jit = jax.jit(joint_least_squares, static_argnames=("options",))
