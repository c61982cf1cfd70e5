"""Phase portraits (flowmoe.portrait): the plotted field, fixed points, classification,
separatrices and trajectories, each checked against something independent:

- the Gram ODE right-hand side called directly on Gram matrices built here (the field a portrait
  draws must be the integrator's own right-hand side);
- the closed form of the invariant plane μ = ν = ρ = 0 (derivations/reduced-ode.md),
  β̇ = 18R₀₀(α)β²(1−β²), α̇ = 6R₁₁(α)β³(1−α²), with R_{p,q} from a 2-D Gauss–Hermite quadrature
  written here, and the fixed points and Jacobians derived from it by hand;
- central / one-sided finite differences for every reported Jacobian;
- 4-D Gauss–Hermite quadrature of the loss plus finite differences for the symmetric reduction;
- toy planar fields with known fixed points and invariant manifolds for the generic algorithms.
"""

import json

import numpy as np
import pytest
from conftest import gate_derivative, hermite
from numpy.polynomial import hermite_e
from scipy.special import expit

import jax.numpy as jnp

import flowmoe
from flowmoe import portrait as P
from flowmoe.cli import main
from flowmoe.ode import gram_ode


def R_quad(p, q, rho, n=120):
    """R_{p,q}(ρ) = E[π^{(p)}(s) π^{(q)}(ρs + √(1−ρ²)z)] for the sigmoid, 2-D Gauss–Hermite."""
    x, w = hermite_e.hermegauss(n)
    w = w / np.sqrt(2 * np.pi)
    s, z = np.meshgrid(x, x, indexing="ij")
    u = rho * s + np.sqrt(max(1.0 - rho * rho, 0.0)) * z
    return float(np.einsum("i,j,ij->", w, w, gate_derivative("sigmoid", p, s) * gate_derivative("sigmoid", q, u)))


def gram_pair(alpha, beta, mu=0.0, nu=0.0, rho=0.0):
    """Gram matrix of [v̄, w̄, v⋆, w⋆] for one student and an orthonormal teacher (built here)."""
    return np.array([[1, rho, alpha, mu], [rho, 1, nu, beta], [alpha, nu, 1, 0], [mu, beta, 0, 1.0]])


def direct_rhs(G, entries, m=1, m_star=1, norms=None):
    """The integrator's right-hand side, called directly: dG/dt at the given entries."""
    ode = gram_ode("sigmoid", "he3", m, m_star)
    r = np.ones(G.shape[0]) if norms is None else norms
    dG = ode.velocity(jnp.asarray(G), jnp.asarray(r))[0]
    dG = np.asarray(dG)
    return np.array([dG[p, q] for p, q in entries]), dG


def fd_jacobian(f, x, lo, hi, h=1e-6):
    """Central differences, or second-order one-sided ones pointing inwards at the box edge."""
    J = np.zeros((2, 2))
    for k in range(2):
        e = np.zeros(2)
        e[k] = h
        if x[k] + h <= hi[k] and x[k] - h >= lo[k]:
            J[:, k] = (f(x + e) - f(x - e)) / (2 * h)
        elif x[k] + 2 * h <= hi[k]:
            J[:, k] = (-3 * f(x) + 4 * f(x + e) - f(x + 2 * e)) / (2 * h)
        else:
            J[:, k] = (3 * f(x) - 4 * f(x - e) + f(x - 2 * e)) / (2 * h)
    return J


def sign_kind(eigs, tol):
    re = np.real(eigs)
    if np.any(np.abs(re) <= tol):
        return "degenerate"
    return "sink" if np.all(re < 0) else "source" if np.all(re > 0) else "saddle"


STARTS = np.array([[-0.9, 0.05], [-0.4, 0.3], [0.3, 0.1], [0.5, -0.4], [-0.6, -0.8]])


@pytest.fixture(scope="module")
def pair_portrait():
    plane = P.make_plane(P.pair_reduction(), "alpha", "beta")
    return plane, P.compute_portrait(plane, grid=21, n_starts=8, starts=STARTS, t_end=15.0)


# --- the plotted field is the ODE right-hand side --------------------------------------------


def test_plotted_field_equals_ode_rhs_and_closed_form(pair_portrait, rng):
    plane, pt = pair_portrait
    assert pt.info["invariant"] and pt.info["label"] == "exact (invariant plane)"
    idx = rng.choice(pt.X.size, size=12, replace=False)
    for k in idx:
        a, b = pt.X.flat[k], pt.Y.flat[k]
        (da, db), dG = direct_rhs(gram_pair(a, b), [(0, 2), (1, 3)])
        # Same numbers as the integrator's right-hand side (same code path up to vmap): 1e-13.
        assert abs(pt.U.flat[k] - da) <= 1e-13 and abs(pt.V.flat[k] - db) <= 1e-13
        # Off-plane components vanish: the plane is invariant (μ̇ = ν̇ = ρ̇ = 0).
        assert max(abs(dG[0, 3]), abs(dG[1, 2]), abs(dG[0, 1])) <= 1e-14
        # The closed form with independently computed R₀₀, R₁₁ (quadrature accuracy ~1e-12).
        assert abs(pt.U.flat[k] - 6 * R_quad(1, 1, a) * b**3 * (1 - a * a)) <= 1e-9
        assert abs(pt.V.flat[k] - 18 * R_quad(0, 0, a) * b**2 * (1 - b * b)) <= 1e-9
    assert pt.info["max_off_plane_speed"] <= 1e-13


# --- fixed points ----------------------------------------------------------------------------


def test_fixed_points_are_zeros_with_checked_jacobians_and_kinds(pair_portrait):
    plane, pt = pair_portrait
    fps = pt.fixed_points
    assert fps
    lo, hi = np.array([-1.0, -1.0]), np.array([1.0, 1.0])

    def f(x):
        return direct_rhs(gram_pair(*x), [(0, 2), (1, 3)])[0]

    for fp in fps:
        x = np.array(fp["point"])
        assert np.max(np.abs(f(x))) <= 1e-10                      # the field vanishes there
        J_fd = fd_jacobian(f, x, lo, hi)
        J = np.array(fp["jacobian"])
        assert np.max(np.abs(J - J_fd)) <= 1e-6 * max(1.0, np.max(np.abs(J)))
        assert fp["kind"] == sign_kind(np.linalg.eigvals(J_fd), 1e-5)
        np.testing.assert_allclose(sorted(fp["eigenvalues"]), sorted(np.real(np.linalg.eigvals(J_fd))),
                                   atol=1e-6 * max(1.0, np.max(np.abs(J))))


def test_fixed_points_of_the_invariant_plane_match_the_hand_analysis(pair_portrait):
    """On μ = ν = ρ = 0: α̇ = 6R₁₁(α)β³(1−α²), β̇ = 18R₀₀(α)β²(1−β²) with R₀₀, R₁₁ > 0, so the zeros
    are the line β = 0 (J = 0 there: degenerate) and the corners α, β = ±1, where
    J = diag(−12αβ³R₁₁(α), −36βR₀₀(α)): (1,1) sink, (−1,1) and (−1,−1) saddles, (1,−1) source."""
    _, pt = pair_portrait
    corners = {(1, 1): "sink", (-1, 1): "saddle", (-1, -1): "saddle", (1, -1): "source"}
    found = {}
    for fp in pt.fixed_points:
        a, b = fp["point"]
        if fp["kind"] == "degenerate":
            assert abs(b) <= 1e-8
            assert fp["set"] is not None  # reported as part of a curve of fixed points
            continue
        key = (int(round(a)), int(round(b)))
        assert abs(a - key[0]) <= 1e-12 and abs(b - key[1]) <= 1e-12
        found[key] = fp
        lam = sorted([-12 * a * b**3 * R_quad(1, 1, a), -36 * b * R_quad(0, 0, a)])
        np.testing.assert_allclose(sorted(fp["eigenvalues"]), lam, rtol=1e-8)
        assert fp["on_boundary"] and set(fp["directions"]) == {"one-sided"}
    assert {k: v["kind"] for k, v in found.items()} == corners
    assert any(fp["kind"] == "degenerate" for fp in pt.fixed_points)


def test_separatrices_run_along_the_invariant_edges(pair_portrait):
    """The edges α = ±1 (α̇ ∝ 1−α²) and β = ±1 (β̇ ∝ 1−β²) are invariant: from the saddle (−1, 1) the
    unstable manifold runs along β = 1 to the sink (1, 1) and the stable one along α = −1."""
    _, pt = pair_portrait
    seps = [s for s in pt.separatrices if pt.fixed_points[s["saddle"]]["point"] == [-1.0, 1.0]]
    kinds = {s["manifold"] for s in seps}
    assert kinds == {"stable", "unstable"}
    for s in seps:
        xy = s["points"]
        if s["manifold"] == "unstable":
            assert np.max(np.abs(xy[:, 1] - 1)) <= 1e-9 and xy[-1, 0] > 0.999
        else:
            assert np.max(np.abs(xy[:, 0] + 1)) <= 1e-9 and xy[-1, 1] < 0.05


def test_trajectories_stay_on_the_plane_and_match_a_second_integrator(pair_portrait):
    plane, pt = pair_portrait
    assert len(pt.trajectories) == len(STARTS)
    for tr in pt.trajectories:
        # The engine's integrator (diffrax, whole 4×4 Gram state) never leaves μ = ν = ρ = 0 ...
        assert tr["off_plane"] <= 1e-9
        # ... and agrees with an independent integrator (scipy DOP853) of the 2-D plane field, which is
        # what is drawn on an invariant plane.
        assert tr["curve"] == "restricted to the plane"
        n = len(tr["t"])
        assert n >= 10
        np.testing.assert_allclose(tr["t"], np.linspace(0, 15.0, 401)[:n], rtol=1e-14)
        np.testing.assert_allclose(tr["xy_full"][:n], tr["xy"], atol=2e-6)


def test_symmetric_trajectories_keep_students_identical():
    plane = P.make_plane(P.symmetric_reduction(2), "alpha", "beta")
    trs = P.trajectories(plane, [[0.2, 0.3]], 4.0, invariant=True, n_save=41)
    assert len(trs) == 1 and trs[0]["off_plane"] <= 1e-12
    # The (α, β) field of identical students equals the one-student field (see the test below), so the
    # restricted flow equals the pair's restricted flow.
    ref = P.integrate_plane(P.make_plane(P.pair_reduction()), [0.2, 0.3], 4.0, n_out=41)
    np.testing.assert_allclose(trs[0]["xy"], ref, atol=1e-8)


# --- generic algorithms on toy fields with known answers ---------------------------------------


class ToyPlane:
    """The duck type of :class:`flowmoe.portrait.Plane` for a closed-form planar field."""

    def __init__(self, f, jac, xlim=(-1.5, 1.5), ylim=(-1.5, 1.5)):
        self.f, self.jac, self.xlim, self.ylim = f, jac, xlim, ylim

    def field(self, xy):
        return np.asarray(self.f(np.asarray(xy)), dtype=float)

    def batched(self, name, pts):
        pts = np.asarray(pts, dtype=float).reshape(-1, 2)
        F = np.array([self.field(p) for p in pts]).reshape(-1, 2)
        if name == "field_jac":
            return F, np.array([self.jac(p) for p in pts]).reshape(-1, 2, 2)
        return F, np.zeros(len(pts))

    def valid(self, pts, tol=0.0):
        pts = np.asarray(pts).reshape(-1, 2)
        return ((pts[:, 0] >= self.xlim[0]) & (pts[:, 0] <= self.xlim[1])
                & (pts[:, 1] >= self.ylim[0]) & (pts[:, 1] <= self.ylim[1]))


def test_toy_bistable_field():
    """ẋ = x − x³, ẏ = −y: saddle (0,0) (λ = −1, 1), sinks (±1, 0) (λ = −2, −1)."""
    toy = ToyPlane(lambda p: [p[0] - p[0] ** 3, -p[1]], lambda p: [[1 - 3 * p[0] ** 2, 0], [0, -1]])
    fps = P.find_fixed_points(toy, n_starts=9)
    got = sorted((round(fp["point"][0], 9) + 0.0, fp["kind"], tuple(np.round(fp["eigenvalues"], 9))) for fp in fps)
    assert got == [(-1.0, "sink", (-2.0, -1.0)), (0.0, "saddle", (-1.0, 1.0)), (1.0, "sink", (-2.0, -1.0))]


def test_toy_curved_unstable_manifold():
    """ẋ = x, ẏ = −y + x²: the saddle's unstable manifold is y = x²/3, its stable manifold x = 0."""
    toy = ToyPlane(lambda p: [p[0], -p[1] + p[0] ** 2], lambda p: [[1, 0], [2 * p[0], -1]])
    fps = P.find_fixed_points(toy, n_starts=7)
    assert [fp["kind"] for fp in fps] == ["saddle"] and np.allclose(fps[0]["point"], 0, atol=1e-12)
    seps = P.separatrices(toy, fps, t_end=20.0, h=1e-7)
    assert {(s["manifold"], s["branch"]) for s in seps} == {("unstable", 1), ("unstable", -1),
                                                            ("stable", 1), ("stable", -1)}
    for s in seps:
        x, y = s["points"].T
        if s["manifold"] == "unstable":
            assert np.max(np.abs(y - x**2 / 3)) <= 1e-6 and np.max(np.abs(x)) > 1.4
        else:
            assert np.max(np.abs(x)) <= 1e-6 and np.max(np.abs(y)) > 1.4


def test_toy_spiral_source_and_classification_tolerance():
    A = np.array([[0.5, -2.0], [2.0, 0.5]])  # eigenvalues 0.5 ± 2i: a source (spiral)
    toy = ToyPlane(lambda p: A @ p, lambda p: A)
    fps = P.find_fixed_points(toy, n_starts=5)
    assert len(fps) == 1 and fps[0]["kind"] == "source"
    assert sorted(np.abs(fps[0]["eigenvalues_imag"])) == pytest.approx([2.0, 2.0])
    assert P.classify([-1.0, 1e-9], tol=1e-6) == "degenerate"
    assert P.classify([-1.0, -1e-3], tol=1e-6) == "sink"
    assert P.classify([-1.0, 2.0], tol=1e-6) == "saddle"


# --- symmetric reduction (identical students) --------------------------------------------------


def _quadrature_velocity(x5, m, n=22, h=1e-5):
    """(α̇, β̇, μ̇, ν̇, ρ̇) of student 0 when all m students share (v̄, w̄), from the loss
    L = ½E[(Σ_i π(v̄_iᵀz)He₃(w̄_iᵀz) − π(z₁)He₃(z₂))²] by 4-D Gauss–Hermite quadrature (v⋆ = e₁,
    w⋆ = e₂) and central differences in student 0's raw vectors: dv̄₀/dt = −∇_{v₀}L at ‖v₀‖ = 1."""
    alpha, beta, mu, nu, rho = x5
    a3 = np.sqrt(1 - alpha**2 - mu**2)
    b3 = (rho - alpha * nu - mu * beta) / a3
    b4 = np.sqrt(1 - nu**2 - beta**2 - b3**2)
    v, w = np.array([alpha, mu, a3, 0.0]), np.array([nu, beta, b3, b4])
    z, wz = hermite_e.hermegauss(n)
    wz = wz / np.sqrt(2 * np.pi)
    Z = np.stack(np.meshgrid(z, z, z, z, indexing="ij"), -1).reshape(-1, 4)
    W = np.einsum("i,j,k,l->ijkl", wz, wz, wz, wz).ravel()
    target = expit(Z[:, 0]) * hermite(3, Z[:, 1])
    rest = (m - 1) * expit(Z @ v) * hermite(3, Z @ w)

    def loss(v0, w0):
        f = expit(Z @ (v0 / np.linalg.norm(v0))) * hermite(3, Z @ (w0 / np.linalg.norm(w0))) + rest
        return 0.5 * W @ (f - target) ** 2

    gv, gw = np.zeros(4), np.zeros(4)
    for k in range(4):
        e = np.zeros(4)
        e[k] = h
        gv[k] = (loss(v + e, w) - loss(v - e, w)) / (2 * h)
        gw[k] = (loss(v, w + e) - loss(v, w - e)) / (2 * h)
    dv, dw = -gv, -gw
    return np.array([dv[0], dw[1], dv[1], dw[0], dv @ w + v @ dw])


@pytest.mark.parametrize("m", [1, 3])
def test_symmetric_reduction_velocity_against_quadrature(m, rng):
    red = P.symmetric_reduction(m)
    for _ in range(2):
        u = rng.standard_normal((2, 4))
        u /= np.linalg.norm(u, axis=1, keepdims=True)
        x5 = np.array([u[0, 0], u[1, 1], u[0, 1], u[1, 0], u[0] @ u[1]])  # a valid (α, β, μ, ν, ρ)
        dx, spread, off = red.velocity(x5)
        # Identical students stay identical: every orbit moves as one, collinear pairs stay collinear
        # (R_{p,q} is evaluated at ρ = 1 for them).
        assert spread <= 1e-12 and off <= 1e-12 and np.all(np.isfinite(dx))
        np.testing.assert_allclose(dx, _quadrature_velocity(x5, m), atol=1e-8)  # quadrature ≈ 1e-9


def test_identical_students_move_like_one_on_the_invariant_plane(rng):
    """On μ = ν = ρ = 0 the student–student terms only push student i along v̄_i, w̄_i (projected out)
    or along w̄ − ρv̄ / v̄ − ρw̄ (orthogonal to v⋆, w⋆ there), so the (α, β) field does not depend on m."""
    one, three = P.make_plane(P.symmetric_reduction(1)), P.make_plane(P.symmetric_reduction(3))
    pts = rng.uniform(-1, 1, (20, 2))
    F1, leak1 = one.batched("field_leak", pts)
    F3, leak3 = three.batched("field_leak", pts)
    np.testing.assert_allclose(F3, F1, atol=1e-12)
    assert np.max(leak3) <= 1e-12


# --- slices of a spec ----------------------------------------------------------------------------


def test_slice_of_a_spec_is_labelled_and_its_field_is_the_rhs(tmp_path, rng):
    out = tmp_path / "slice"
    assert main(["portrait", "--preset", "small", "--grid", "9", "--fp-starts", "5", "--no-trajectories",
                 "--out", str(out)]) == 0
    rec = json.loads((out / "portrait.json").read_text())
    assert rec["reduction"] == "slice" and not rec["invariant"] and rec["label"] == "slice (not invariant)"
    assert "SLICE (NOT INVARIANT)" in (out / "portrait.svg").read_text()  # said plainly on the figure
    spec = flowmoe.load_preset("small")
    state = flowmoe.init.initial_state(spec.model)
    m, ms = spec.model.m, spec.model.m_star
    # Default axes: α, β of the student with the largest initial expert overlap.
    i = int(np.argmax(state.gram[m:2 * m, 2 * m + ms]))
    assert (rec["x"], rec["y"]) == (f"alpha[{i},0]", f"beta[{i},0]")
    ex, ey = (i, 2 * m), (m + i, 2 * m + ms)
    assert rec["base_point"] == pytest.approx([state.gram[ex], state.gram[ey]], abs=1e-15)
    pt = P.Portrait.load(out)
    others = np.ones_like(state.gram, dtype=bool)
    others[2 * m:, 2 * m:] = False
    np.fill_diagonal(others, False)
    for (p, q) in (ex, ey):
        others[p, q] = others[q, p] = False
    leaks = []
    for k in rng.choice(np.flatnonzero(pt.valid), size=6, replace=False):
        G = state.gram.copy()
        G[ex] = G[ex[::-1]] = pt.X.flat[k]
        G[ey] = G[ey[::-1]] = pt.Y.flat[k]
        (dx, dy), dG = direct_rhs(G, [ex, ey], m, ms, state.norms)
        assert abs(pt.U.flat[k] - dx) <= 1e-12 and abs(pt.V.flat[k] - dy) <= 1e-12
        assert pt.leak.flat[k] == pytest.approx(np.max(np.abs(dG[others])), abs=1e-13)
        leaks.append(pt.leak.flat[k])
    assert max(leaks) > 1e-3  # the other entries do move: not invariant
    for fp in rec["fixed_points"]:
        G = state.gram.copy()
        G[ex] = G[ex[::-1]] = fp["point"][0]
        G[ey] = G[ey[::-1]] = fp["point"][1]
        assert np.max(np.abs(direct_rhs(G, [ex, ey], m, ms, state.norms)[0])) <= 1e-9


# --- command line --------------------------------------------------------------------------------


def test_portrait_command_writes_the_documented_files(tmp_path, pair_portrait, capsys):
    out = tmp_path / "p"
    assert main(["portrait", "--grid", "21", "--fp-starts", "8", "--starts=-0.2,0.1;0.3,-0.4", "--t-end", "5",
                 "--out", str(out)]) == 0
    said = capsys.readouterr()
    assert "portrait" in said.err and "trajectories" in said.err           # the progress bar over the stages
    for name in ("portrait.json", "portrait.npz", "portrait.png", "portrait.svg"):   # every file is listed
        assert str(out / name) in said.out.splitlines()
    rec = json.loads((out / "portrait.json").read_text())
    assert [tr["start"] for tr in rec["trajectories"]] == [[-0.2, 0.1], [0.3, -0.4]]
    for fp in rec["fixed_points"]:
        assert set(fp) >= {"point", "eigenvalues", "kind"} and len(fp["point"]) == 2
        assert fp["kind"] in ("sink", "source", "saddle", "degenerate")
    assert {(tuple(fp["point"]), fp["kind"]) for fp in rec["fixed_points"] if fp["kind"] != "degenerate"} == \
        {(tuple(fp["point"]), fp["kind"]) for fp in pair_portrait[1].fixed_points if fp["kind"] != "degenerate"}
    assert rec["invariant"] and rec["x"] == "alpha" and rec["held"] == {"mu": 0.0, "nu": 0.0, "rho": 0.0}
    png = (out / "portrait.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000
    svg = (out / "portrait.svg").read_text()
    assert "<svg" in svg[:2000] and "EXACT: invariant plane" in svg


@pytest.mark.parametrize("argv, field", [
    (["--x", "gamma"], "--x"),
    (["--x", "alpha", "--y", "alpha"], "--y"),
    (["--fix", "alpha=0.1"], "--fix"),
    (["--fix", "rho=1.5"], "--fix rho"),
    (["--fix", "rho"], "--fix"),
    (["--reduction", "slice"], "--reduction"),
    (["--preset", "small", "--x", "alpha[5,0]"], "--x"),
    (["--reduction", "symmetric", "--students", "0"], "--students"),
    (["--xlim", "0.5", "0.2"], "--xlim"),
    (["--starts", "0.1;0.2"], "--starts"),
])
def test_bad_input_is_a_one_line_error_naming_the_field(argv, field, capsys, tmp_path):
    assert main(["portrait", *argv, "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"error: {field}" in err
