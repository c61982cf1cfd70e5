"""Finite-step training in R^d on the raw vectors (docs/maths.md §6): the check of the ODE by simulation.

Every method takes steps θ ← θ − η g(θ) on the raw student vectors θ = (V, W), from the same
start as the ODE, and stores the same :class:`~flowmoe.trajectory.Trajectory` as the ODE:

- ``"population-gd"``: g = ∇L(θ), the exact population gradient (autodiff of the closed-form
  L(G(θ)) through the normalisation; the same gradient as :func:`flowmoe.population_grad`);
- ``"online-sgd"``: g = ∇ ½ mean_b (f(θ, x_b) − f⋆(x_b))² on a fresh batch x_1..x_B ~ N(0, I_d)
  every step (what the paper's Fig. 1 used);
- ``"gd"``: the same batch gradient on n samples drawn once (full-batch GD on the empirical loss);
- ``"minibatch-sgd"``: batches of B out of those n samples, by random reshuffling (a new random
  permutation each epoch of ⌊n/B⌋ steps; the n mod B samples left over in an epoch are skipped).

Conventions: per-sample gradients go through v̄ = v/‖v‖ (:mod:`flowmoe.model`), so each gradient
is orthogonal to its vector and the norms can only grow, ‖u − ηg‖² = ‖u‖² + η²‖g‖²; they are
tracked. The time map is t = η × steps (stored in ``provenance.time``). As η → 0 and B → ∞ the
overlaps converge to the ODE solution: error O(η) plus noise O(√(η/B)) (docs/maths.md §6).

Loop shape (STYLE §4): a pure ``step(state, data, lr) → state`` run inside ``lax.while_loop``
between saves, and saves collected by ``lax.fori_loop`` in chunks of at most :data:`CHUNK`
saves per compiled call (one compile per model shape; the Python loop over chunks only shows
progress and stops early). At each save the Gram matrix of the unit directions and the norms
are recorded; the loss is the exact population loss of that Gram matrix (float64).

Divergence: a step whose parameters are not finite, or whose norms exceed ``max_norm_growth`` ×
their initial values (the time map t = η·steps then no longer means flow time), is not taken;
:func:`simulate` raises :class:`~flowmoe.errors.SolveError` whose ``partial`` is the
Trajectory up to the last good save.
"""

from __future__ import annotations

import functools
import time
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from .data import InputDistribution, StandardGaussian
from .errors import Interrupted, SolveError, SpecError
from .gates import get_expert, get_gate
from .layout import Layout
from .names import METHODS, USES_BATCH, USES_SAMPLES
from .model import MoEModel, gram_of, moe_model, population_backend
from .ode import loss_along
from .provenance import Provenance
from .spec import _float, _int
from .trajectory import Trajectory

DTYPES = {"float64": jnp.float64, "float32": jnp.float32}
CHUNK = 64
DEFAULT_SAVES = 200
MAX_STEPS = 10**12  # beyond this the step counter and t = lr·steps stop being meaningful

_OK, _NONFINITE, _NORM = 0, 1, 2


class State(NamedTuple):
    """Simulation state: raw vectors, number of steps taken, current permutation (minibatch)."""

    V: jax.Array
    W: jax.Array
    k: jax.Array
    perm: jax.Array


class Data(NamedTuple):
    """Everything constant during a run: teacher, fixed samples, base key, norm limits."""

    V_star: jax.Array
    W_star: jax.Array
    X: jax.Array
    y: jax.Array
    key: jax.Array
    limit: jax.Array
    r0V: jax.Array
    r0W: jax.Array


def _gradient(method: str, model: MoEModel, batch: int, n: int, d: int, dtype, inputs: InputDistribution):
    """g(state, data) → (gV, gW) for one method (see the module docstring)."""
    loss_grad = jax.grad(model.batch_loss, argnums=(0, 1))
    if method == "population-gd":
        pop_grad = jax.grad(model.population_loss, argnums=(0, 1))
        return lambda s, data: pop_grad(s.V, s.W, data.V_star, data.W_star)
    if method == "online-sgd":
        def online(s, data):
            X = inputs.sample(jax.random.fold_in(data.key, s.k), batch, d, dtype)
            y = model.output(data.V_star, data.W_star, X)
            return loss_grad(s.V, s.W, X, y)
        return online
    if method == "gd":
        return lambda s, data: loss_grad(s.V, s.W, data.X, data.y)
    per_epoch = n // batch

    def minibatch(s, data):
        idx = jax.lax.dynamic_slice(s.perm, ((s.k % per_epoch) * batch,), (batch,))
        return loss_grad(s.V, s.W, data.X[idx], data.y[idx])
    return minibatch


@functools.cache
def _runner(method, model, batch, n, d, m, m_star, dtype_name, chunk, transform, project=False,
            inputs: InputDistribution = StandardGaussian()):
    """The compiled ``run(state, data, lr, total, save_every, count)`` of one configuration."""
    dtype = DTYPES[dtype_name]
    grad = _gradient(method, model, batch, n, d, dtype, inputs)
    per_epoch = n // batch if method == "minibatch-sgd" else 0

    def step(s: State, data: Data, lr) -> State:
        if per_epoch:
            epoch_key = jax.random.fold_in(data.key, s.k // per_epoch)
            perm = jax.lax.cond(s.k % per_epoch == 0, lambda: jax.random.permutation(epoch_key, n).astype(jnp.int32),
                                lambda: s.perm)
            s = s._replace(perm=perm)
        gV, gW = grad(s, data)
        if transform is not None:
            gV, gW = transform(gV, gW)
        V, W = s.V - lr * gV.astype(dtype), s.W - lr * gW.astype(dtype)
        if project:  # back onto the spheres of the initial norms (the model only sees directions)
            V = V * (data.r0V / jnp.linalg.norm(V, axis=1))[:, None]
            W = W * (data.r0W / jnp.linalg.norm(W, axis=1))[:, None]
        return State(V, W, s.k + 1, s.perm)

    def health(s: State, data: Data):
        r = jnp.concatenate([jnp.linalg.norm(s.V, axis=1), jnp.linalg.norm(s.W, axis=1)])
        finite = jnp.all(jnp.isfinite(s.V)) & jnp.all(jnp.isfinite(s.W)) & jnp.all(jnp.isfinite(r))
        code = jnp.where(finite, jnp.where(jnp.all(r <= data.limit), _OK, _NORM), _NONFINITE)
        return code.astype(jnp.int32)

    def advance(s: State, status, data: Data, lr, target):
        """Steps until k = target or a bad step (which is not taken; its status is kept)."""
        def cond(c):
            return (c[1] == _OK) & (c[0].k < target)

        def body(c):
            new = step(c[0], data, lr)
            code = health(new, data)
            keep = code == _OK
            return jax.tree_util.tree_map(lambda a, b: jnp.where(keep, a, b), new, c[0]), code
        return jax.lax.while_loop(cond, body, (s, status))

    n_dirs = Layout(m, m_star).n_dirs

    @jax.jit
    def run(s: State, data: Data, lr, total, save_every, count):
        bufs = (jnp.zeros((chunk, n_dirs, n_dirs), dtype), jnp.zeros((chunk, n_dirs), dtype),
                jnp.zeros((chunk,), s.k.dtype), jnp.zeros((chunk,), jnp.int32))

        def body(i, c):
            s, status, (G, r, k, codes) = c
            s, status = advance(s, status, data, lr, jnp.minimum(s.k + save_every, total))
            norms = jnp.concatenate([jnp.linalg.norm(a, axis=1) for a in (s.V, s.W, data.V_star, data.W_star)])
            G = G.at[i].set(gram_of(s.V, s.W, data.V_star, data.W_star))
            return s, status, (G, r.at[i].set(norms), k.at[i].set(s.k), codes.at[i].set(status))
        s, _, out = jax.lax.fori_loop(0, count, body, (s, jnp.int32(_OK), bufs))
        return s, out
    return run


def check_options(method, lr, steps=None, t_end=None, batch=None, n=None, seed=0, dtype="float64",
                  save_every=None, max_norm_growth=10.0) -> dict:
    """Validate the simulation options; returns them normalised (raises SpecError naming the field)."""
    if method not in METHODS:
        raise SpecError("method", f"got {method!r}; allowed: {list(METHODS)}")
    lr = _float(lr, "lr", positive=True)
    if (steps is None) == (t_end is None):
        raise SpecError("steps", "give exactly one of steps (an integer ≥ 1) and t_end (flow time; "
                                 "steps = round(t_end / lr))")
    if steps is not None:
        steps = _int(steps, "steps", 1)
    else:
        t_end = _float(t_end, "t_end", positive=True)
        if t_end < lr:
            raise SpecError("t_end", f"t_end = {t_end:g} is shorter than one step (lr = {lr:g}); give "
                                     "t_end ≥ lr (steps = round(t_end / lr)) or steps directly")
        ratio = t_end / lr
        if not ratio <= MAX_STEPS:
            raise SpecError("t_end", f"t_end / lr = {ratio:.3g} steps; at most {MAX_STEPS:.0e} steps are allowed")
        steps = int(round(ratio))
    if steps > MAX_STEPS:
        raise SpecError("steps", f"must be ≤ {MAX_STEPS:.0e}, got {steps}")
    if method in USES_BATCH:
        if batch is None:
            raise SpecError("batch", f"method {method!r} needs a batch size (an integer ≥ 1)")
        batch = _int(batch, "batch", 1)
    elif batch is not None:
        raise SpecError("batch", f"is only used by methods {list(USES_BATCH)}, not {method!r}")
    if method in USES_SAMPLES:
        if n is None:
            raise SpecError("n", f"method {method!r} needs the number of fixed samples n (an integer ≥ 1)")
        n = _int(n, "n", 1)
        if method == "minibatch-sgd" and batch > n:
            raise SpecError("batch", f"must be ≤ n = {n} for 'minibatch-sgd', got {batch}")
    elif n is not None:
        raise SpecError("n", f"is only used by methods {list(USES_SAMPLES)}, not {method!r}")
    seed = _int(seed, "seed", 0)
    if not isinstance(dtype, str) or dtype not in DTYPES:
        raise SpecError("dtype", f"got {dtype!r}; allowed: {list(DTYPES)}")
    if save_every is None:
        save_every = max(1, steps // DEFAULT_SAVES)
    save_every = _int(save_every, "save_every", 1)
    if max_norm_growth is not None:
        max_norm_growth = _float(max_norm_growth, "max_norm_growth")
        if not max_norm_growth > 1:
            raise SpecError("max_norm_growth", f"must be > 1 (or None for no limit), got {max_norm_growth}")
    return dict(method=method, lr=lr, steps=steps, batch=batch, n=n, seed=seed, dtype=dtype,
                save_every=save_every, max_norm_growth=max_norm_growth)


def simulate(V, W, V_star, W_star, method="online-sgd", lr=0.01, steps=None, *, t_end=None, batch=None,
             n=None, seed=0, gate="sigmoid", expert="he3", save_every=None, dtype="float64",
             max_norm_growth=10.0, grad_transform=None, project=False, progress=False,
             inputs: InputDistribution | None = None) -> Trajectory:
    """Train the student (V, W) against the teacher (V⋆, W⋆) by finite steps in R^d.

    ``method`` is one of :data:`METHODS`; ``lr`` the step η; give ``steps`` or a flow time
    ``t_end`` ≥ η (steps = round(t_end/η); a t_end shorter than one step is refused). ``batch`` (online-sgd, minibatch-sgd) and ``n`` (gd,
    minibatch-sgd) as the method needs; ``seed`` fixes every random draw (the fixed samples,
    the online batches, the permutations). A save every ``save_every`` steps (default: about
    200 saves) and at the last step; saved times t = η × steps. ``dtype="float32"`` runs the
    simulation in single precision (explicit opt-in; the stored results are float64).
    ``grad_transform(gV, gW) → (gV, gW)`` is applied to every gradient before the step (for
    experiments, e.g. a deliberately wrong gradient in tests).
    ``project=True`` rescales every row back to its initial norm after each step (projected, or
    spherical, SGD/GD). The model only sees directions, so this changes nothing but the norms; it
    removes the noise-driven norm growth that slows plain SGD at large d/B (effective step
    η/‖u‖²), and the step then follows the flow on the spheres of the initial norms.
    ``inputs`` is the input distribution (:mod:`flowmoe.data`; default x ~ N(0, I_d)).

    Returns a :class:`Trajectory` (``t``, ``gram``, ``norms``, ``loss``, ``provenance``); raises
    :class:`SolveError` with the partial Trajectory if the run diverges, and on Ctrl-C
    :class:`~flowmoe.errors.Interrupted` with the saves done so far (``status="interrupted"``).
    """
    from .api import _check_vectors

    opts = check_options(method, lr, steps, t_end, batch, n, seed, dtype, save_every, max_norm_growth)
    V, W, V_star, W_star = _check_vectors(V, W, V_star, W_star)
    gate_obj, expert_obj = get_gate(gate, "gate"), get_expert(expert, "expert")
    model = moe_model(gate_obj, expert_obj)
    m, m_star, d = V.shape[0], V_star.shape[0], V.shape[1]
    jdt = DTYPES[opts["dtype"]]
    steps, every = opts["steps"], opts["save_every"]
    B = opts["batch"] or 0
    n_fixed = opts["n"] or 0

    inputs = StandardGaussian() if inputs is None else inputs
    if not isinstance(inputs, InputDistribution):
        raise SpecError("inputs", f"must be a flowmoe.data.InputDistribution, got {type(inputs).__name__}")
    if inputs.directions(d).shape[0]:
        raise SpecError("inputs", "distributions with fixed directions need an expectation backend for them; "
                                  "only the standard Gaussian is supported by the simulators' loss today")
    key = jax.random.key(opts["seed"])
    data_key, step_key = jax.random.split(key)
    Vs, Ws = jnp.asarray(V_star, jdt), jnp.asarray(W_star, jdt)
    if n_fixed:
        X = inputs.sample(data_key, n_fixed, d, jdt)
        y = _jitted(model.output)(Vs, Ws, X)
    else:
        X, y = jnp.zeros((0, d), jdt), jnp.zeros((0,), jdt)
    r0 = np.concatenate([np.linalg.norm(V, axis=1), np.linalg.norm(W, axis=1)])
    growth = opts["max_norm_growth"]
    limit = jnp.asarray(r0 * growth if growth is not None else np.full_like(r0, np.inf), jdt)
    data = Data(Vs, Ws, X, y, step_key, limit, jnp.asarray(np.linalg.norm(V, axis=1), jdt),
                jnp.asarray(np.linalg.norm(W, axis=1), jdt))
    state = State(jnp.asarray(V, jdt), jnp.asarray(W, jdt), jnp.asarray(0),
                  jnp.zeros((n_fixed if method == "minibatch-sgd" else 0,), jnp.int32))

    n_saves = -(-steps // every)
    chunk = CHUNK  # fixed, so that runs of any length share one compiled function
    run = _runner(method, model, B, n_fixed, d, m, m_star, opts["dtype"], chunk, grad_transform, bool(project),
                  inputs)
    lr_arr, total, every_arr = jnp.asarray(opts["lr"], jdt), jnp.asarray(steps), jnp.asarray(every)

    G0 = np.asarray(_jitted(gram_of)(state.V, state.W, Vs, Ws), dtype=np.float64)
    r_init = np.concatenate([r0, np.linalg.norm(V_star, axis=1), np.linalg.norm(W_star, axis=1)])
    grams, norms, ks = [G0[None]], [r_init[None]], [np.zeros(1, dtype=np.int64)]
    failure = None
    wall = time.perf_counter()
    bar = _progress(n_saves, method) if progress else None
    done, interrupted = 0, False
    try:
        while done < n_saves and failure is None:
            count = min(chunk, n_saves - done)
            state, (G, r, k, codes) = run(state, data, lr_arr, total, every_arr, jnp.asarray(count))
            codes = np.asarray(codes[:count])
            good = count if np.all(codes == _OK) else int(np.argmax(codes != _OK))
            grams.append(np.asarray(G[:good], np.float64))
            norms.append(np.asarray(r[:good], np.float64))
            ks.append(np.asarray(k[:good], np.int64))
            if good < count:
                failure = (int(codes[good]), int(np.asarray(state.k)))
            done += count
            if bar is not None:
                bar.update(count)
    except KeyboardInterrupt:  # keep the chunks done (a chunk is appended whole or not at all)
        interrupted = True
    finally:
        if bar is not None:
            bar.close()
    wall = time.perf_counter() - wall

    ks = np.concatenate(ks)
    gram = np.concatenate(grams)
    loss = loss_along(population_backend(gate_obj, expert_obj, m, m_star), gram)
    samples = {"population-gd": 0, "online-sgd": B, "gd": n_fixed, "minibatch-sgd": B}[method]
    sim = {"method": method, "lr": opts["lr"], "batch": opts["batch"], "n": opts["n"], "seed": opts["seed"],
           "steps": int(ks[-1]), "steps_requested": steps, "save_every": every, "dtype": opts["dtype"],
           "max_norm_growth": growth, "d": d, "samples_per_step": samples, "project": bool(project),
           "grad_transform": None if grad_transform is None else repr(grad_transform), "inputs": inputs.describe()}
    prov = Provenance(source="simulation", model={"gate": gate_obj.convention(), "expert": expert_obj.convention()},
                      time="t = lr * steps", simulation=sim, stats={"wall_time_s": wall})
    traj = Trajectory(opts["lr"] * ks, gram, np.concatenate(norms), loss, m, m_star, prov)
    if interrupted:
        traj = traj.with_provenance(status="interrupted", error="interrupted by the user (Ctrl-C)")
        raise Interrupted(f"{method} interrupted at t = {traj.t[-1]:.6g} ({len(traj)} of {n_saves + 1} saves)",
                          partial=traj)
    if failure is not None:
        code, k_bad = failure
        why = ("the parameters or their norms became non-finite (NaN/inf)" if code == _NONFINITE else
               f"a norm grew beyond max_norm_growth = {growth:g} × its initial value (the time map "
               "t = lr × steps no longer follows gradient flow)")
        traj = traj.with_provenance(status="diverged", error=why)
        raise SolveError(f"{method} diverged at step {k_bad + 1} (t = lr × steps ≈ {opts['lr'] * (k_bad + 1):.6g}): "
                         f"{why}; lr = {opts['lr']:g} is too large. The saves up to t = {traj.t[-1]:.6g} "
                         f"({len(traj)} of {n_saves + 1}) are kept in .partial", partial=traj)
    return traj


@functools.cache
def _jitted(fn):
    return jax.jit(fn)


def _progress(total: int, method: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=f"simulate {method}", unit="save", leave=False)


__all__ = ["METHODS", "check_options", "simulate"]
