"""Fine-tuning a pruned network, the fitted convergence rate, and the rate the Hessian predicts (docs/maths.md §5).

Fine-tuning is exact gradient flow on the pruned network: the Gram ODE of docs/maths.md §2 with the pruned
m (which may equal m⋆), from the pruned Gram matrix and norms; as a check, population gradient
descent on raw vectors in R^d (:func:`finetune_gd`, the simulator of :mod:`flowmoe.simulate`).

Predicted rate. With m = m⋆ students matched to the teachers, the teacher point (v̄_i = v⋆_j,
w̄_i = w⋆_j) is a zero-loss minimum. Only directions matter, so the variables live on a product of
2m⋆ unit spheres; scale is not a variable. In a chart ū_p(ξ) = (u_p + B_pξ_p)/‖u_p + B_pξ_p‖
(B_p an orthonormal basis of the tangent space u_p⊥) the Hessian H of L(ξ) at ξ = 0 is the
Riemannian Hessian, because the Riemannian gradient vanishes there (L = 0 is a minimum). The flow
on raw vectors u_p = r_p ū_p moves directions with speed factor r_p⁻² (docs/maths.md §2, norms conserved), so

    dξ/dt = −D⁻¹Hξ + O(ξ²),  D = diag(r_p²)   ⇒   ξ(t) ~ e^{−λ_min t},  L ≈ ½ξᵀHξ ~ e^{−2λ_min t},

where λ_min is the smallest eigenvalue of D^{−1/2} H D^{−1/2}. The distance to the teacher decays at
λ_min, the loss at **2λ_min** (the ``predicted_rate`` reported for the loss).

Which tangent space. Put the teacher in R^k (k = rank of its Gram, 2m⋆ for an orthonormal
teacher) plus ``extra_dims`` more coordinates. The tangent space at u_p splits into the in-span
part (dimension k − 1) and the part orthogonal to every teacher direction (dimension
``extra_dims``). The Gram entries change only at second order in the orthogonal part and without
cross terms, so H is block diagonal, and by rotation invariance the orthogonal block is
h_⊥ ⊗ I_extra with one 2m⋆ × 2m⋆ matrix h_⊥ (its eigenvalues repeat ``extra_dims`` times; nothing
else depends on ``extra_dims``, which the tests check). No exact zero eigenvalues arise at the
teacher point: rotations that fix the teacher span pointwise fix the students too. The orthogonal
modes are excited whenever the run had d > k (students start with components outside the teacher
span) and they are part of the Gram dynamics, so the predicted rate is the smallest eigenvalue
over both blocks; both blocks are reported.

Which modes are excited. A converged run has usually damped some of the slowest modes already
(e.g. the router of a student that aligned early), so the loss after pruning may decay at the
slowest *excited* rate, a little above 2λ_min. :func:`modal_decomposition` splits the pruned
state over the eigenmodes (from its Gram matrix alone) and predicts the whole linearised loss
curve; ``flowmoe prune`` reports it next to 2λ_min.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from .api import flow_from_gram, population_grad
from .errors import Interrupted, SpecError
from .io import check_out_dir, write_json
from .backends.pair import gram_loss
from .plotting.finetune import finetune_figure
from .observables import greedy_matching
from .progress import Stages
from .prune import Network, PruningRule, prune
from .trajectory import Trajectory

FINETUNE_SOLVER = {"method": "dopri8", "rtol": 1e-12, "atol": 1e-14}
# Where fits stop. Near the teacher L is *linear* in the Gram entries (∂L/∂G ≠ 0 there; only on
# the Gram manifold is it quadratic in the distance), so any error of the integrated Gram matrix
# shows in the loss at first order. Measured floors of the fine-tuning loss: ≈1e-14 with the
# factor state of :mod:`flowmoe.ode` (the default), ≈1e-13 with state="gram"; fits stop above.
LOSS_FLOOR = 1e-12
DISTANCE_FLOOR = 1e-6   # distance² = Σ 2(1 − γ) is resolved to ≈ 1e-15 (factor state)


# Saved runs ------------------------------------------------------------------------------
@dataclass
class Run:
    """A run folder: its spec, trajectory and summary record."""

    path: Path
    spec: object
    traj: Trajectory
    record: dict

    def network(self, index: int = -1) -> Network:
        m = self.spec.model
        return Network.from_trajectory(self.traj, index, m.gate, m.expert)


def load_run(run_dir) -> Run:
    """Read ``run_dir`` written by ``flowmoe run``; every defect is a :class:`SpecError` on ``run_dir``."""
    from .spec import RunSpec

    path = Path(run_dir)
    if not path.is_dir():
        raise SpecError("run_dir", f"no such folder: {path}")
    summary = path / "summary.json"
    if not summary.is_file():
        raise SpecError("run_dir", f"{path} has no summary.json (not a folder written by `flowmoe run`)")
    try:
        record = json.loads(summary.read_text())
        spec_dict = record["spec"]
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as err:
        raise SpecError("run_dir", f"{summary} is not a flowmoe run summary "
                                   f"({type(err).__name__}: {err})") from None
    try:
        spec = RunSpec.from_dict(spec_dict)
    except (SpecError, TypeError, AttributeError) as err:
        raise SpecError("run_dir", f"the spec in {summary} is invalid: {err}") from None
    try:
        traj = Trajectory.load(path / "trajectory.npz")
    except SpecError as err:  # missing, truncated or not a trajectory file
        raise SpecError("run_dir", str(err)) from None
    m = spec.model
    if (traj.m, traj.m_star) != (m.m, m.m_star):
        raise SpecError("run_dir", f"trajectory.npz has m = {traj.m}, m⋆ = {traj.m_star} but summary.json's "
                                   f"spec has m = {m.m}, m⋆ = {m.m_star}: the files come from different runs")
    meta_spec = traj.provenance.spec
    if meta_spec is not None:
        try:
            same = RunSpec.from_dict(meta_spec).to_dict() == spec.to_dict()
        except (SpecError, TypeError, AttributeError):
            same = False
        if not same:
            raise SpecError("run_dir", "trajectory.npz and summary.json were written by runs of "
                                       "different specs")
    if not (np.all(np.isfinite(traj.gram[-1])) and np.all(np.isfinite(traj.norms[-1]))):
        raise SpecError("run_dir", "the final state in trajectory.npz is not finite")
    return Run(path, spec, traj, record)


# Fine-tuning -----------------------------------------------------------------------------
def finetune(net: Network, t_end: float, n_save: int = 400, **solver) -> Trajectory:
    """Exact gradient flow (Gram ODE, norms fixed) of the pruned network from its state, on [0, t_end]."""
    opts = dict(FINETUNE_SOLVER, **solver)
    ts = np.linspace(0.0, float(t_end), int(n_save))
    return flow_from_gram(net.gram, net.norms, net.m, net.m_star, ts, net.gate, net.expert, **opts)


def teacher_matching(net: Network) -> list[tuple[int, int]]:
    """One student per teacher: greedy matching on γ⁽¹⁾ + γ⁽²⁾ (positions in ``net``)."""
    return greedy_matching(net.router_alignment + net.expert_alignment)


def distance_to_teacher(traj: Trajectory, pairs) -> np.ndarray:
    """‖ū − u⋆‖ over the matched pairs: sqrt(Σ_{(i,j)} 2(1 − γ⁽¹⁾_{ij}) + 2(1 − γ⁽²⁾_{ij}))."""
    g1, g2 = traj.router_alignment, traj.expert_alignment
    sq = sum(2.0 * (1.0 - g1[:, i, j]) + 2.0 * (1.0 - g2[:, i, j]) for i, j in pairs)
    return np.sqrt(np.clip(sq, 0.0, None))


@dataclass
class RateFit:
    """y ≈ C e^{−rate·t} on the window [t0, t1]; ``halves`` are the rates fitted on each half."""

    rate: float
    log_c: float
    t0: float
    t1: float
    n_points: int
    max_log_residual: float
    halves: tuple

    def to_dict(self) -> dict:
        return {"rate": self.rate, "window": [self.t0, self.t1], "n_points": self.n_points,
                "max_log_residual": self.max_log_residual, "rate_first_half": self.halves[0],
                "rate_second_half": self.halves[1]}


def fit_rate(t, y, lo: float, hi: float, min_points: int = 6) -> RateFit | None:
    """Log-linear least-squares fit of y(t) on the stretch from the first time y ≤ hi up to the first
    time y < lo (the exponential regime: the transient is over, the round-off floor not reached).
    None if that stretch has fewer than ``min_points`` saved points."""
    t, y = np.asarray(t, float), np.asarray(y, float)
    if not hi > lo:
        return None
    below = np.flatnonzero(y <= hi)
    if below.size == 0:
        return None
    start = int(below[0])
    under = np.flatnonzero(y[start:] < lo)
    stop = start + int(under[0]) if under.size else len(y)
    if stop - start < min_points:
        return None
    ts, ly = t[start:stop], np.log(y[start:stop])

    def line(a, b):
        slope, icpt = np.polyfit(a, b, 1)
        return float(slope), float(icpt)

    slope, icpt = line(ts, ly)
    half = len(ts) // 2
    halves = (-line(ts[:half + 1], ly[:half + 1])[0], -line(ts[half:], ly[half:])[0])
    resid = float(np.max(np.abs(ly - (slope * ts + icpt))))
    return RateFit(-slope, icpt, float(ts[0]), float(ts[-1]), len(ts), resid, halves)


def fit_loss_rate(traj: Trajectory, drop: float = 1e-2) -> RateFit | None:
    """Rate of the loss on the window [LOSS_FLOOR, drop × L(0)] (the first two decades are
    transient: fast modes). None when L(0) is too close to the floor for such a window."""
    return fit_rate(traj.t, traj.loss, LOSS_FLOOR, min(traj.loss[0] * drop, 1e-4))


def fit_distance_rate(traj: Trajectory, pairs, drop: float = 0.1) -> RateFit | None:
    """Rate of the distance to the teacher on the window [DISTANCE_FLOOR, drop × distance(0)]."""
    dist = distance_to_teacher(traj, pairs)
    return fit_rate(traj.t, dist, DISTANCE_FLOOR, min(dist[0] * drop, 1e-2))


# The Hessian on the product of spheres ---------------------------------------------------
def realise_rows(gram) -> np.ndarray:
    """Rows X with X Xᵀ = gram (PSD), as few columns as the rank; Cholesky when positive definite."""
    g = np.asarray(gram, dtype=np.float64)
    try:
        return np.linalg.cholesky(g)
    except np.linalg.LinAlgError:
        w, q = np.linalg.eigh(g)
        keep = w > 1e-12 * max(w.max(), 1.0)
        return q[:, keep] * np.sqrt(w[keep])


@dataclass
class TeacherHessian:
    """Hessian of L at the teacher point in the tangent chart, and the rates it implies.

    ``hessian`` is indexed by (p, a), p-major: p over the 2m⋆ student directions
    [v̄_1..v̄_m⋆, w̄_1..w̄_m⋆] (student j at teacher j), a over the tangent basis B_p: first the k − 1
    in-span vectors, then ``extra_dims`` orthogonal ones. ``span_rates``/``perp_rates`` are the
    eigenvalues of D^{−1/2}HD^{−1/2} on each block (``perp_rates`` once, each has multiplicity
    ``extra_dims``)."""

    hessian: np.ndarray
    rate_matrix: np.ndarray
    span_rates: np.ndarray
    perp_rates: np.ndarray
    cross_block_max: float
    grad_norm: float
    loss_at_teacher: float
    directions: np.ndarray   # (2m⋆, D): unit student directions at the teacher point
    teacher: np.ndarray      # (2m⋆, D): teacher rows
    bases: np.ndarray        # (2m⋆, D, k − 1 + extra)
    norms: np.ndarray        # (2m⋆,)
    k: int
    extra_dims: int
    gate: str
    expert: str

    @property
    def m_star(self) -> int:
        return self.teacher.shape[0] // 2

    def distance_rate(self, include_perp: bool = True) -> float:
        """λ_min: smallest eigenvalue that is not zero (relative 1e-9) over the chosen blocks."""
        rates = np.concatenate([self.span_rates, self.perp_rates if include_perp else []])
        scale = np.max(np.abs(rates))
        pos = rates[rates > 1e-9 * scale]
        return float(pos.min())

    def loss_rate(self, include_perp: bool = True) -> float:
        """Predicted exponential rate of the loss, 2λ_min."""
        return 2.0 * self.distance_rate(include_perp)

    def to_dict(self) -> dict:
        return {"span_rates": self.span_rates.tolist(), "perp_rates": self.perp_rates.tolist(),
                "perp_multiplicity": self.extra_dims, "teacher_rank": self.k,
                "cross_block_max": self.cross_block_max, "grad_norm_at_teacher": self.grad_norm,
                "loss_at_teacher": self.loss_at_teacher, "norms": self.norms.tolist()}


def _tangent_bases(T: np.ndarray, k: int, extra: int) -> np.ndarray:
    D = k + extra
    out = np.zeros((T.shape[0], D, k - 1 + extra))
    for p, u in enumerate(T[:, :k]):
        # Orthonormal basis of u⊥ within R^k: the last k − 1 left singular vectors of u.
        q, _, _ = np.linalg.svd(u[:, None])
        out[p, :k, :k - 1] = q[:, 1:]
        out[p, k:, k - 1:] = np.eye(extra)
    return out


@functools.lru_cache(maxsize=None)
def _hessian_program(gate: str, expert: str, m_star: int, dim: int, nb: int):
    """jit(ξ, U, B ↦ (∂²L/∂ξ², (L, ∂L/∂ξ))) for one shape (compiled once per shape).

    ∂L/∂ξ = Σ_{p<q} A_pq ∂G_pq/∂ξ with A = ∂L/∂G from the closed form (each unordered pair once,
    hence the ½ on the symmetric cotangent); the Hessian is its forward-mode Jacobian, which
    compiles about twice as fast as reverse-over-reverse through the whole loss.
    """
    fn = gram_loss(gate, expert, m_star, m_star)
    P = 2 * m_star
    eye = jnp.eye(2 * P)

    def gram_of(xi, U, B):
        X = U + jnp.einsum("pda,pa->pd", B, xi.reshape(P, nb))
        X = X / jnp.linalg.norm(X, axis=1, keepdims=True)
        Y = jnp.concatenate([X, U])
        return (Y @ Y.T) * (1.0 - eye) + eye

    def grad(xi, U, B):
        G, pullback = jax.vjp(lambda x: gram_of(x, U, B), xi)
        L, A = fn.loss_and_grad(G)
        g = pullback(0.5 * A)[0]
        return g, (L, g)

    return jax.jit(jax.jacfwd(grad, has_aux=True))


def teacher_hessian(teacher_gram, norms, gate="sigmoid", expert="he3", extra_dims: int = 2) -> TeacherHessian:
    """Hessian of the closed-form loss at the teacher point on the product of spheres.

    ``teacher_gram``: 2m⋆ × 2m⋆ Gram of [v⋆_1..v⋆_m⋆, w⋆_1..w⋆_m⋆]; ``norms``: (2m⋆,) norms of the
    raw student vectors in teacher order (student j sits at teacher j). Computed by JAX
    through chart → unit vectors → Gram → L(G) (:func:`_hessian_program`).
    """
    Gt = np.asarray(teacher_gram, dtype=np.float64)
    r = np.asarray(norms, dtype=np.float64)
    P = Gt.shape[0]
    if Gt.ndim != 2 or Gt.shape != (P, P) or P % 2 or r.shape != (P,):
        raise SpecError("teacher_gram", f"need a 2m⋆ × 2m⋆ teacher Gram and 2m⋆ norms, "
                                        f"got {Gt.shape}, {r.shape}")
    extra = int(extra_dims)
    if extra < 0:
        raise SpecError("extra_dims", f"must be ≥ 0, got {extra_dims}")
    ms = P // 2
    Tk = realise_rows(Gt)
    k = Tk.shape[1]
    T = np.concatenate([Tk, np.zeros((P, extra))], axis=1)
    T /= np.linalg.norm(T, axis=1, keepdims=True)
    B = _tangent_bases(T, k, extra)
    nb = B.shape[2]
    program = _hessian_program(str(gate), str(expert), ms, T.shape[1], nb)
    H, (L0, grad) = program(jnp.zeros(P * nb), jnp.asarray(T), jnp.asarray(B))
    H = np.asarray(H)
    H = 0.5 * (H + H.T)
    s = np.repeat(1.0 / r, nb)
    M = s[:, None] * H * s[None, :]
    a = np.tile(np.arange(nb), P)
    span, perp = a < k - 1, a >= k - 1
    cross = float(np.max(np.abs(H[np.ix_(span, perp)]))) if span.any() and perp.any() else 0.0
    span_rates = np.linalg.eigvalsh(M[np.ix_(span, span)]) if span.any() else np.zeros(0)
    first_perp = a == k - 1  # one orthogonal coordinate per direction: the block h_⊥ (scaled)
    perp_rates = np.linalg.eigvalsh(M[np.ix_(first_perp, first_perp)]) if extra else np.zeros(0)
    return TeacherHessian(H, M, span_rates, perp_rates, cross, float(np.linalg.norm(grad)),
                          float(L0), T, T.copy(), B, r, k, extra, str(gate), str(expert))


def hessian_by_differences(hess: TeacherHessian, h: float = 1e-5) -> np.ndarray:
    """The same Hessian from central differences of :func:`flowmoe.population_grad` on raw vectors.

    L(ξ) = L_raw(r_q(u_q + B_qξ_q)) exactly (L is scale-invariant), so
    ∂²L/∂ξ_{q,b}∂ξ_{p,a} = r_q B_qᵀ[∇_{u_q}L_raw(U + h r_p B_p e_a) − ∇_{u_q}L_raw(U − h r_p B_p e_a)]/2h
    + O(h²).
    """
    ms, r, B = hess.m_star, hess.norms, hess.bases
    U = hess.directions * r[:, None]
    Vs, Ws = hess.teacher[:ms], hess.teacher[ms:]
    P, nb = B.shape[0], B.shape[2]
    H = np.zeros((P * nb, P * nb))

    def proj(Y):
        gV, gW = population_grad(Y[:ms], Y[ms:], Vs, Ws, hess.gate, hess.expert)
        g = np.concatenate([gV, gW])
        return np.concatenate([r[q] * B[q].T @ g[q] for q in range(P)])

    for p in range(P):
        for a in range(nb):
            step = np.zeros_like(U)
            step[p] = h * r[p] * B[p][:, a]
            H[:, p * nb + a] = (proj(U + step) - proj(U - step)) / (2 * h)
    return H


# Validation in R^d -----------------------------------------------------------------------
def realise_network(net: Network):
    """Raw vectors (V, W, V⋆, W⋆) in R^rank whose unit Gram is ``net.gram`` and norms ``net.norms``."""
    X = realise_rows(net.gram)
    X = X / np.linalg.norm(X, axis=1, keepdims=True)
    m, ms = net.m, net.m_star
    X[:2 * m] *= net.norms[:2 * m, None]
    return X[:m], X[m:2 * m], X[2 * m:2 * m + ms], X[2 * m + ms:]


def finetune_gd(net: Network, lr: float, t_end: float, save_every: int | None = None) -> Trajectory:
    """Fine-tuning by population gradient descent on raw vectors in R^d (:func:`flowmoe.simulate.simulate`,
    method ``"population-gd"``: autodiff through the normalisation, not the Gram-ODE formula), from
    vectors realising ``net``'s Gram matrix and norms. Time t = η × steps; norms grow at O(η)."""
    from .simulate import simulate

    V, W, Vs, Ws = realise_network(net)
    return simulate(V, W, Vs, Ws, method="population-gd", lr=lr, t_end=t_end, gate=net.gate,
                    expert=net.expert, save_every=save_every)


# Which modes the pruned state excites -------------------------------------------------------
def student_order(net: Network) -> np.ndarray:
    """Positions of the students sorted by their matched teacher (needs m = m⋆)."""
    pairs = teacher_matching(net)
    return np.array([i for i, _ in sorted(pairs, key=lambda p: p[1])], dtype=int)


def modal_decomposition(hess: TeacherHessian, net: Network):
    """Rates λ_k and loss shares c_k of the linearised flow from ``net``'s state: L(t) ≈ Σ_k c_k e^{−2λ_k t}.

    With ζ = D^{1/2}ξ the linear flow is dζ/dt = −Mζ, M = D^{−1/2}HD^{−1/2}, and L ≈ ½ζᵀMζ, so mode
    k (eigenpair λ_k, e_k of M) carries c_k = ½λ_k (e_kᵀζ(0))². The chart coordinates come from the
    Gram matrix alone: ξ_p = B_pᵀū_p / (u_pᵀū_p). In-span parts are explicit; of the parts
    orthogonal to the teacher span only their Gram C = G_ss − YYᵀ is known, which suffices because
    that block is h_⊥ ⊗ I: the share of eigenvector e of h_⊥ is ½λ eᵀ(R C R)e with R = diag(r_p/γ_p).
    Returns (rates, shares, block) with block "span" or "perp" per mode.
    """
    if hess.extra_dims < 1:
        raise SpecError("extra_dims", "the modal decomposition needs extra_dims ≥ 1")
    order = student_order(net)
    m, ms, k = net.m, net.m_star, hess.k
    idx = np.concatenate([order, m + order])
    tidx = 2 * m + np.arange(2 * ms)
    g = net.gram[np.ix_(idx, tidx)]
    Tk = hess.teacher[:, :k]
    Y = np.linalg.lstsq(Tk, g.T, rcond=None)[0].T          # in-span part of ū_p in R^k
    gamma = np.diag(g)                                       # u_pᵀū_p
    xi = np.einsum("pka,pk->pa", hess.bases[:, :k, :k - 1], Y) / gamma[:, None]
    zeta = (hess.norms[:, None] * xi).ravel()
    nb = hess.bases.shape[2]
    a = np.tile(np.arange(nb), 2 * ms)
    M = hess.rate_matrix
    lam_s, E_s = np.linalg.eigh(M[np.ix_(a < k - 1, a < k - 1)])
    share_s = 0.5 * lam_s * (E_s.T @ zeta) ** 2
    C = net.gram[np.ix_(idx, idx)] - Y @ Y.T
    Rg = hess.norms / gamma
    lam_p, E_p = np.linalg.eigh(M[np.ix_(a == k - 1, a == k - 1)])
    share_p = 0.5 * lam_p * np.einsum("pk,pq,qk->k", E_p, Rg[:, None] * C * Rg[None, :], E_p)
    rates = np.concatenate([lam_s, lam_p])
    blocks = np.array(["span"] * lam_s.size + ["perp"] * lam_p.size)
    return rates, np.concatenate([share_s, share_p]), blocks


def linear_loss(rates, shares, t) -> np.ndarray:
    """L(t) of the linearised flow, Σ_k c_k e^{−2λ_k t}."""
    t = np.asarray(t, float)
    return np.exp(-2.0 * t[:, None] * rates[None, :]) @ shares


# The whole job ---------------------------------------------------------------------------
@dataclass
class Prediction:
    """The Hessian at the teacher point for a pruned net with m = m⋆ and the rates it predicts."""

    hess: TeacherHessian
    loss_rate: float          # 2 λ_min
    distance_rate: float      # λ_min
    include_perp: bool


def predict(net: Network, extra_dims: int = 2, d: int | None = None) -> Prediction | None:
    """:class:`Prediction` for ``net``, or None when m ≠ m⋆ (no isolated zero-loss minimum).

    The orthogonal block counts when the run had d > rank of the teacher Gram (``d=None``: counts)."""
    if net.m != net.m_star:
        return None
    order = student_order(net)
    norms = np.concatenate([net.norms[order], net.norms[net.m + order]])
    hess = teacher_hessian(net.teacher_gram, norms, net.gate, net.expert, extra_dims)
    perp = (d is None or d > hess.k) and extra_dims > 0
    return Prediction(hess, hess.loss_rate(perp), hess.distance_rate(perp), perp)


def auto_t_end(loss0: float, rate: float | None) -> float:
    """Fine-tuning time: 1.5 × the time the predicted rate needs to bring L(0) down to 1e-15."""
    if not rate:
        return 200.0
    return float(1.5 * np.log(max(loss0, 1e-12) / 1e-15) / rate)


def _check_job_options(run: Run, t_end, n_save, extra_dims, at):
    def number(value, name, positive=False):
        try:
            x = float(value)
        except (TypeError, ValueError):
            raise SpecError(name, f"must be a number, got {value!r}") from None
        if not np.isfinite(x) or (positive and x <= 0):
            raise SpecError(name, f"must be a finite number{' > 0' if positive else ''}, got {value!r}")
        return x

    if t_end is not None:
        t_end = number(t_end, "t_end", positive=True)
    if isinstance(n_save, bool) or not isinstance(n_save, (int, np.integer)) or n_save < 10:
        raise SpecError("n_save", f"must be an integer ≥ 10, got {n_save!r}")
    if isinstance(extra_dims, bool) or not isinstance(extra_dims, (int, np.integer)) \
            or not 0 <= extra_dims <= 16:
        raise SpecError("extra_dims", f"must be an integer in 0..16, got {extra_dims!r}")
    index = -1
    if at is not None:
        at = number(at, "at")
        t = run.traj.t
        if not t[0] <= at <= t[-1]:
            raise SpecError("at", f"must be a saved time of the run, in [{t[0]:g}, {t[-1]:g}], got {at:g}")
        index = int(np.argmin(np.abs(t - at)))
    return t_end, int(n_save), int(extra_dims), index


def _mode_groups(rates, shares, blocks, keep: int = 6) -> list[dict]:
    """Modes grouped by (numerically) equal rate, slowest first: loss rate 2λ, summed share, count."""
    order = np.argsort(rates)
    groups = []
    for i in order:
        if groups and abs(rates[i] - groups[-1]["lam"]) <= 1e-8 * max(abs(rates[i]), 1e-300):
            g = groups[-1]
            g["loss_share"] += float(shares[i])
            g["count"] += 1
            g["blocks"].add(str(blocks[i]))
        else:
            groups.append({"lam": float(rates[i]), "loss_share": float(shares[i]), "count": 1,
                           "blocks": {str(blocks[i])}})
    return [{"loss_rate": 2 * g["lam"], "loss_share": g["loss_share"], "count": g["count"],
             "blocks": sorted(g["blocks"])} for g in groups[:keep]]


PRUNE_STAGES = ("prune", "hessian", "fine-tune", "fit", "write")


def prune_and_finetune(run: Run, rule: PruningRule, out, t_end: float | None = None, n_save: int = 400,
                       extra_dims: int = 2, at: float | None = None, progress: bool = False,
                       command: str | None = None) -> dict:
    """Prune ``run`` at the saved time nearest ``at`` (default: the last), fine-tune by the Gram ODE,
    fit the rate and compare it with the Hessian's prediction; write OUT/finetune.json,
    OUT/finetune_trajectory.npz and OUT/finetune.png (+ .svg). Returns the JSON record.

    ``progress`` shows the stages (:data:`PRUNE_STAGES`) on stderr; ``command`` (the command line)
    is recorded. On Ctrl-C, finetune.json is written with ``"status": "interrupted"``, the stages
    finished (``stages_done``) and their results (the pruning, the predicted rate), and
    :class:`~flowmoe.errors.Interrupted` is raised again."""
    t_end, n_save, extra_dims, index = _check_job_options(run, t_end, n_save, extra_dims, at)
    out = check_out_dir(out)  # before any computation
    stages = Stages(PRUNE_STAGES, "prune", progress)
    record = {"status": "complete", "command": command, "run_dir": str(run.path), "spec": run.spec.to_dict(),
              "pruned_at": {"index": int(index % len(run.traj)), "t": float(run.traj.t[index])},
              "rule": rule.name, "rule_params": rule.params(), "uses_teacher": rule.uses_teacher}
    try:
        with stages.stage("prune"):
            result = prune(run.network(index), rule)
        pruned = result.network
        record.update({k: v for k, v in result.to_dict().items() if k not in ("rule", "params")})
        with stages.stage("hessian"):
            pred = predict(pruned, extra_dims, run.spec.model.d)
        record["predicted_rate"] = pred.loss_rate if pred else None
        if t_end is None:
            t_end = auto_t_end(result.loss_after, pred.loss_rate if pred else None)
        with stages.stage("fine-tune"):
            traj = finetune(pruned, t_end, n_save)
        with stages.stage("fit"):
            pairs = teacher_matching(pruned) if pred else []
            fit = fit_loss_rate(traj)
            dfit = fit_distance_rate(traj, pairs) if pairs else None
            modes, linear = None, None
            if pred and extra_dims > 0:
                rates, shares, blocks = modal_decomposition(pred.hess, pruned)
                linear = linear_loss(rates, shares, traj.t)
                modes = {"linear_loss_at_start": float(shares.sum()),
                         "slowest": _mode_groups(rates, shares, blocks)}
                if fit:
                    win = (traj.t >= fit.t0) & (traj.t <= fit.t1)
                    modes["linear_rate_on_fit_window"] = float(-np.polyfit(traj.t[win], np.log(linear[win]), 1)[0])
        record.update({
            "final_loss": float(traj.loss[-1]),
            "fitted_rate": fit.rate if fit else None,
            "predicted_rate": pred.loss_rate if pred else None,
            "rate_relative_difference": (abs(fit.rate - pred.loss_rate) / pred.loss_rate
                                         if (fit and pred) else None),
            "fitted_distance_rate": dfit.rate if dfit else None,
            "predicted_distance_rate": pred.distance_rate if pred else None,
            "fit": fit.to_dict() if fit else None,
            "distance_fit": dfit.to_dict() if dfit else None,
            "hessian": dict(pred.hess.to_dict(), include_perp=pred.include_perp) if pred else None,
            "modes": modes,
            "notes": _notes(pred, fit, pruned, result.loss_after, float(traj.loss[-1])),
            "matching": [[pruned.labels[i], j] for i, j in pairs],
            "finetune": {"t_end": t_end, "n_save": n_save, "status": traj.provenance.status,
                         "solver": {**traj.provenance.solver, **traj.provenance.stats}},
            "files": ["finetune.json", "finetune_trajectory.npz", "finetune.png", "finetune.svg"],
        })
        with stages.stage("write"):
            traj = traj.annotate(pruned_from=str(run.path), rule=rule.name, labels=list(pruned.labels))
            traj.save(out / "finetune_trajectory.npz")
            write_json(out / "finetune.json", record)
            finetune_figure(traj, fit, pred.loss_rate if pred else None, out / "finetune", linear=linear,
                            floor=LOSS_FLOOR, title=finetune_title(record))
    except KeyboardInterrupt:
        stages.close()
        record.update(status="interrupted", stages_done=list(stages.done), files=["finetune.json"])
        write_json(out / "finetune.json", record)
        done = ", ".join(stages.done) or "none"
        raise Interrupted(f"stages finished: {done}; wrote {out / 'finetune.json'} (status: interrupted)",
                          partial=record) from None
    finally:
        stages.close()
    return record


def _notes(pred, fit, pruned, loss0, final) -> list[str]:
    notes = ["predicted_rate = 2 λ_min: λ_min is the smallest eigenvalue of D^-1/2 H D^-1/2, H the Hessian "
             "of L on the product of spheres at the teacher point, D = diag(norm²); the distance to the "
             "teacher decays at λ_min, the loss at 2 λ_min. modes: the linearised flow from the pruned "
             "state; the slowest modes may carry almost no loss, then the fitted rate follows the slowest "
             "excited one"]
    if pred is None:
        notes.append(f"no prediction: the pruned network has m = {pruned.m} students for "
                     f"m⋆ = {pruned.m_star} teachers, so there is no isolated zero-loss minimum to "
                     "linearise at")
    if fit is None:
        notes.append(f"no fitted rate: the loss after pruning ({loss0:.2e}) leaves no window between "
                     f"1e-2 × L(0) and the round-off floor {LOSS_FLOOR:g}; prune earlier (--at) to see the "
                     "exponential regime")
    if final > 1e-10:
        notes.append(f"the fine-tuning did not reach zero loss (final {final:.2e}); a longer --t-end may "
                     "help, or the pruned network is not in the basin of the teacher point")
    return notes


def finetune_title(record: dict) -> str:
    """Title of the fine-tuning figure from the finetune.json record."""
    return (f"{record['spec']['name']}: rule {record['rule']}, m {len(record['removed']) + len(record['kept'])} "
            f"→ {len(record['kept'])} at t = {record['pruned_at']['t']:g}")
