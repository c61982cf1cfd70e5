"""The seams of round 2: a backend, a gate and a term added from outside flowmoe, without touching it.

- A toy expectation backend (defined here, registered by name) for a *constant* gate π ≡ c with
  He₃ experts, whose loss is the closed form L = ½ c² Σ_{u,u'} s_u s_u' · 6 ρ(w_u, w_u')³
  (E[He₃(a)He₃(b)] = 6ρ³ for unit-variance fields with correlation ρ). It must run through
  ``flowmoe.gradient_flow`` and ``flowmoe run --set model.backend=...`` and agree with the pair
  engine given the same constant gate as a sympy formula (an independent derivation).
- A toy gate (defined here as a sympy formula) must work in both the ODE and ``flowmoe.simulate``:
  ``(1 + tanh(z/2))/2`` is the logistic sigmoid written differently, so every result must equal
  the sigmoid's.
- The import graph has no cycles: see tests/test_imports.py.
"""

import jax.numpy as jnp
import numpy as np
import pytest
import sympy as sp

import flowmoe
from flowmoe.backends import ExpectationBackend, register_backend
from flowmoe.gates import Z, Gate, get_gate, register_gate
from flowmoe.init import sample_vectors
from flowmoe.spec import InitSpec, MoESpec

C = 0.5


class ConstantGateBackend(ExpectationBackend):
    """Closed-form L for π ≡ C and He₃ experts (any teacher)."""

    def __init__(self, gate, expert, layout):
        self.layout, self.gate, self.expert = layout, gate, expert

    def loss(self, G):
        e = jnp.asarray(self.layout.expert)
        s = jnp.asarray(self.layout.sign)
        rho = G[e[:, None], e[None, :]]
        return 0.5 * C**2 * jnp.sum(s[:, None] * s[None, :] * 6.0 * rho**3)

    def describe(self):
        return {"name": "toy-constant", "exact": True}

    @property
    def key(self):
        return ("toy-constant", self.layout)


register_backend("toy-constant", ConstantGateBackend)
CONST = register_gate(Gate("toy-half", sp.Rational(1, 2) + 0 * Z, "the constant gate 1/2 (tests)"))
TANH_SIGMOID = register_gate(Gate("toy-tanh-sigmoid", (1 + sp.tanh(Z / 2)) / 2, "(1 + tanh(z/2))/2 (tests)"))


def _start(m=3, m_star=1, d=20, seed=2):
    return sample_vectors(MoESpec(m=m, m_star=m_star, d=d, init=InitSpec(seed=seed)))


def test_toy_backend_loss_equals_pair_engine_with_constant_gate():
    V, W, Vs, Ws = _start()
    toy = flowmoe.population_loss(V, W, Vs, Ws, gate="toy-half", model_backend_name="toy-constant")
    pair = flowmoe.population_loss(V, W, Vs, Ws, gate="toy-half")
    assert abs(toy - pair) < 1e-12 * max(1.0, abs(pair)) and pair > 0.1


def test_toy_backend_runs_through_gradient_flow():
    V, W, Vs, Ws = _start()
    ts = np.linspace(0, 2, 5)
    toy = flowmoe.gradient_flow(V, W, Vs, Ws, ts, gate="toy-half", model_backend_name="toy-constant")
    pair = flowmoe.gradient_flow(V, W, Vs, Ws, ts, gate="toy-half")
    assert np.abs(toy.expert_alignment - pair.expert_alignment).max() < 1e-8
    assert np.abs(toy.gram[-1] - toy.gram[0]).max() > 1e-3  # the experts really moved
    assert toy.provenance.model["backend"]["name"] == "toy-constant"


def test_toy_backend_through_flowmoe_run(tmp_path):
    from flowmoe.cli import main

    out = tmp_path / "run"
    code = main(["run", "--preset", "small", "--quiet", "--out", str(out), "--set", "model.backend=toy-constant",
                 "model.gate=toy-half", "solver.t_end=2", "solver.n_save=5"])
    assert code == 0
    traj = flowmoe.Trajectory.load(out / "trajectory.npz")
    assert traj.provenance.model["backend"]["name"] == "toy-constant"
    spec = flowmoe.load_preset("small")
    from flowmoe.init import initial_state

    st = initial_state(spec.model)
    ref = flowmoe.flow_from_gram(st.gram, st.norms, spec.model.m, spec.model.m_star, traj.t, "toy-half", "he3")
    assert np.abs(traj.gram - ref.gram).max() < 1e-7


def test_unknown_backend_is_one_line_error():
    with pytest.raises(flowmoe.SpecError, match="model.backend"):
        MoESpec(backend="no-such-backend")


@pytest.mark.parametrize("expert", ["he3", "he1"])
def test_toy_gate_in_the_ode_equals_sigmoid(expert):
    V, W, Vs, Ws = _start(seed=4)
    ts = np.linspace(0, 3, 4)
    a = flowmoe.gradient_flow(V, W, Vs, Ws, ts, gate="toy-tanh-sigmoid", expert=expert)
    b = flowmoe.gradient_flow(V, W, Vs, Ws, ts, gate="sigmoid", expert=expert)
    assert np.abs(a.gram - b.gram).max() < 1e-9
    assert np.abs(a.loss - b.loss).max() < 1e-10


def test_toy_gate_in_the_simulator_equals_sigmoid():
    V, W, Vs, Ws = _start(seed=4)
    kw = dict(method="online-sgd", lr=0.01, steps=40, batch=64, seed=1)
    a = flowmoe.simulate(V, W, Vs, Ws, gate="toy-tanh-sigmoid", **kw)
    b = flowmoe.simulate(V, W, Vs, Ws, gate="sigmoid", **kw)
    assert np.abs(a.gram - b.gram).max() < 1e-10
    assert np.abs(a.gram[-1] - a.gram[0]).max() > 1e-4


def test_gate_names_and_objects_share_one_cache():
    from flowmoe.backends.pair import gram_loss

    assert gram_loss("sigmoid", "he3", 2, 1) is gram_loss(get_gate("sigmoid"), "he3", 2, 1)
    assert gram_loss("sigmoid", "he3", 2, 1) is gram_loss(get_gate("sigmoid"), flowmoe.gates.get_expert("he3"), 2, 1)


def test_terms_compose_as_a_multiterm():
    """Gradient flow + norm drift: the MultiTerm's vector field is the sum of the terms' fields."""
    import diffrax

    from flowmoe.ode import gram_ode

    vf = gram_ode("sigmoid", "he3", 2, 1, norm_drift_lr=0.1)
    assert len(vf.terms) == 2
    term = vf.diffrax_term("gram")
    assert isinstance(term, diffrax.MultiTerm)
    spec = flowmoe.load_preset("small")
    from flowmoe.init import initial_state

    st = initial_state(spec.model)
    G, r = jnp.asarray(st.gram), jnp.asarray(st.norms)
    parts = [t.vf(0.0, (G, r), None) for t in term.terms]
    dG, dr, _ = vf.velocity(G, r)
    np.testing.assert_allclose(np.asarray(parts[0][0] + parts[1][0]), np.asarray(dG), atol=1e-14)
    np.testing.assert_allclose(np.asarray(parts[0][1] + parts[1][1]), np.asarray(dr), atol=1e-14)
    # the drift term alone: zero direction velocity, positive norm growth of the students only
    assert np.abs(np.asarray(parts[1][0])).max() == 0 and np.all(np.asarray(parts[1][1])[:4] > 0)


class ScaledConstantGateBackend(ConstantGateBackend):
    """The toy backend with an option: L multiplied by ``scale``."""

    def __init__(self, gate, expert, layout, scale=1.0):
        super().__init__(gate, expert, layout)
        self.scale = float(scale)

    def loss(self, G):
        return self.scale * super().loss(G)

    def describe(self):
        return {"name": "toy-scaled", "exact": True}

    @property
    def key(self):
        return ("toy-scaled", self.layout, self.scale)


register_backend("toy-scaled", ScaledConstantGateBackend)


def test_a_trajectory_rebuilds_its_backend_with_the_options_that_made_it():
    from flowmoe.api import vector_field_of

    V, W, Vs, Ws = _start()
    G0, r0 = flowmoe.init.gram_from_vectors(V, W, Vs, Ws)
    ts = np.linspace(0.0, 2.0, 5)
    traj = flowmoe.flow_from_gram(G0, r0, 3, 1, ts, gate="toy-half", model_backend_name="toy-scaled",
                                  backend_options={"scale": 3.0})
    vf, _solver = vector_field_of(traj)
    assert vf.backend.scale == 3.0  # not the factory's default 1.0
    np.testing.assert_allclose(float(vf.backend.loss(G0)), traj.loss[0], rtol=1e-14)
