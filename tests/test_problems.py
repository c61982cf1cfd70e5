"""Every integrator on every problem of the table (tests/problems.py), against its independent reference."""

import numpy as np
import pytest

import flowmoe
from problems import INTEGRATORS, PROBLEMS


@pytest.mark.parametrize("integrator", sorted(INTEGRATORS))
@pytest.mark.parametrize("problem", sorted(PROBLEMS))
def test_integrator_reproduces_reference(problem, integrator):
    p = PROBLEMS[problem]()
    traj = flowmoe.flow_from_gram(p.G0, p.r0, p.m, p.m_star, p.ts, p.gate, p.expert, rtol=1e-10, atol=1e-12,
                                  **INTEGRATORS[integrator])
    err = np.abs(traj.gram - p.reference).max()
    assert err < p.atol, f"{problem} with {integrator}: max |G − G_ref| = {err:.3g} (allowed {p.atol:g})"
    assert traj.provenance.solver["method"] == INTEGRATORS[integrator]["method"]


def test_problems_move():
    """The references are not trivial: the non-stationary problems move by more than 0.05."""
    for name in ("reduced-1x1", "raw-flow-d12"):
        p = PROBLEMS[name]()
        assert np.abs(p.reference[-1] - p.reference[0]).max() > 0.05, name


def test_global_minimum_has_zero_loss():
    p = PROBLEMS["global-minimum"]()
    from flowmoe.backends.pair import gram_loss

    L = float(gram_loss(p.gate, p.expert, p.m, p.m_star).loss(p.G0))
    assert abs(L) < 1e-12
