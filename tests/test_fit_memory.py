"""fit_memory_bytes against the peak resident memory of a fit measured in a fresh process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

# A 512x512 exponential disc, 9 components, 4-component PSF: the solver's memory beyond what
# the process held before the fit (Python, JAX, the image and its weights).
CHILD = textwrap.dedent("""
    import json, resource
    import numpy as np, jax
    from imcascade_jax import fit as F
    from imcascade_jax.model import make_model

    def peak():
        # VmHWM belongs to this process's own address space; ru_maxrss also counts the parent's
        # memory when the child was spawned with vfork (as from a pytest-xdist worker).
        try:
            with open("/proc/self/status") as status:
                for line in status:
                    if line.startswith("VmHWM:"):
                        return int(line.split()[1]) * 1024
        except OSError:
            pass
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    n, n_comp = 512, 9
    x = np.arange(n) - n / 2.0
    r = np.hypot(x[:, None], x[None, :] / 0.7)
    img = 400.0 * np.exp(-r / 12.0) + np.random.default_rng(0).normal(0, 0.005, (n, n))
    weight = np.full((n, n), 1 / 0.005**2)
    sig = np.logspace(np.log10(0.75), np.log10(160.0), n_comp)
    model = make_model((n, n), sig, [1.2, 1.81, 2.93, 5.28], [0.27, 0.51, 0.19, 0.03])
    x0 = np.r_[n / 2 + 0.3, n / 2 - 0.4, 0.5, np.pi / 2, np.full(n_comp, 4.0), 0.0, 0.0, 0.0]
    lb = np.r_[x0[0] - 10, x0[1] - 10, 1e-3, 0.0, np.full(n_comp, -1.0), -1.0, -1e-2, -1e-2]
    ub = np.r_[x0[0] + 10, x0[1] + 10, 1.0, np.pi, np.full(n_comp, 6.0), 1.0, 1e-2, 1e-2]
    options = F.SolverOptions(max_steps=3)  # the peak comes with the first step
    base = peak()
    res = F.least_squares_jit(model, img, weight, x0, lb, ub, options)
    jax.block_until_ready(res.x)
    print(json.dumps(dict(base=base, peak=peak(), estimate=F.fit_memory_bytes(model, options))))
""")


@pytest.mark.slow
def test_memory_estimate_within_factor_1_5_of_measured_peak():
    # A first fit that compiles (the estimate includes XLA's compilation): no on-disk cache.
    env = dict(os.environ, IMCASCADE_JAX_CACHE="0", PYTHONPATH=os.pathsep.join(
        [os.path.dirname(os.path.dirname(os.path.abspath(__file__)))]
        + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
    out = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, check=True,
                         env=env)
    r = json.loads(out.stdout.strip().splitlines()[-1])
    used = r["peak"] - r["base"]
    assert r["estimate"] / 1.5 <= used <= 1.5 * r["estimate"], r
