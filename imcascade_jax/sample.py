"""Posterior sampling, in one namespace: the public names of the modules below.

- :mod:`imcascade_jax.express`: the express-mode problem (Gram matrix) and its likelihood;
- :mod:`imcascade_jax.likelihood`: image likelihoods and the full likelihood of a parameter
  vector;
- :mod:`imcascade_jax.priors`: priors, their transforms, the sampler's coordinates, 1.1's
  priors;
- :mod:`imcascade_jax.logdensity`: log posterior densities (pytrees) and start covariances;
- :mod:`imcascade_jax.nuts`: the NUTS driver (blackjax, numpyro);
- :mod:`imcascade_jax.diagnostics`: ESS, split R-hat, warnings;
- :mod:`imcascade_jax.nested`: dynesty.

``from imcascade_jax import sample as S`` then ``S.run_nuts(...)`` keeps working; new code can
import from the modules themselves.
"""

from __future__ import annotations

from imcascade_jax.diagnostics import (
    MAX_DIVERGENT_FRACTION,
    MAX_RHAT,
    MIN_ESS,
    diagnostics_warnings,
    effective_sample_size,
    nuts_diagnostics,
    split_rhat,
)
from imcascade_jax.express import (
    ExpressLogLike,
    ExpressProblem,
    express_basis,
    express_chi2,
    express_coefficients,
    express_fisher,
    express_log_like,
    express_model,
    express_setup,
)
from imcascade_jax.likelihood import full_fisher, full_log_like, log_weight_constant
from imcascade_jax.logdensity import (
    Compose,
    FullLogLike,
    Identity,
    LinearToLog,
    LogDensity,
    Posterior,
    express_log_density,
    full_log_density,
    gauss_newton_inverse_mass,
    laplace_inverse_mass,
    log_density,
    log_density_of,
    regularised_inverse,
)
from imcascade_jax.nested import DynestyResult, require_dynesty, run_dynesty
from imcascade_jax.nuts import BACKENDS, NutsResult, run_nuts
from imcascade_jax.priors import (
    PRIOR_KINDS,
    Prior,
    constrain,
    flux_from_unconstrained,
    flux_scales,
    flux_scales_from_information,
    flux_to_unconstrained,
    full_mode_prior,
    least_squares_prior,
    linear_cauchy_prior,
    make_prior,
    prior_curvature,
    prior_log_density,
    prior_transform,
    shape_from_unconstrained,
    shape_to_unconstrained,
    unconstrain,
)

__all__ = [
    "BACKENDS", "MAX_DIVERGENT_FRACTION", "MAX_RHAT", "MIN_ESS", "PRIOR_KINDS", "Compose",
    "DynestyResult", "ExpressLogLike", "ExpressProblem", "FullLogLike", "Identity",
    "LinearToLog", "LogDensity", "NutsResult", "Posterior", "Prior", "constrain",
    "diagnostics_warnings", "effective_sample_size", "express_basis", "express_chi2",
    "express_coefficients", "express_fisher", "express_log_density", "express_log_like",
    "express_model", "express_setup", "flux_from_unconstrained", "flux_scales",
    "flux_scales_from_information", "flux_to_unconstrained", "full_fisher", "full_log_density",
    "full_log_like", "full_mode_prior", "gauss_newton_inverse_mass", "laplace_inverse_mass",
    "least_squares_prior", "linear_cauchy_prior", "log_density", "log_density_of",
    "log_weight_constant", "make_prior", "nuts_diagnostics", "prior_curvature",
    "prior_log_density", "prior_transform", "regularised_inverse", "require_dynesty",
    "run_dynesty", "run_nuts", "shape_from_unconstrained", "shape_to_unconstrained",
    "split_rhat", "unconstrain",
]
