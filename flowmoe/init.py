"""Initial states: teacher vectors, student vectors, and their Gram matrix (docs/maths.md §1).

Two samplers with the same law:

- :func:`sample_vectors` draws the vectors in R^d (so a simulation in R^d can share the start);
- :func:`sample_gram` draws only the Gram matrix and the norms, at a cost independent of d. By
  rotation invariance the orthonormal teacher may sit on the first 2m⋆ coordinates; the students'
  components there are Gaussian, and the Gram matrix of their components in the remaining
  d − 2m⋆ coordinates is Wishart, drawn by the Bartlett decomposition.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import SpecError
from .spec import MoESpec


@dataclass(frozen=True)
class InitialState:
    """Unit-direction Gram matrix ``gram`` (N×N, layout of :class:`flowmoe.kernel.Layout`) and
    norms ``norms`` (N,), teacher norms 1. ``vectors`` holds (V, W, V⋆, W⋆) when sampled in R^d."""

    gram: np.ndarray
    norms: np.ndarray
    vectors: tuple | None = None


def teacher_vectors(spec: MoESpec, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Unit teacher vectors (V⋆, W⋆), each (m⋆, d), in the spec's geometry."""
    ms, d = spec.m_star, spec.d
    geometry = spec.teacher.geometry

    def orthonormal(k):
        q, _ = np.linalg.qr(rng.standard_normal((d, k)))
        return q.T

    def random_unit(k):
        x = rng.standard_normal((k, d))
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    if geometry == "orthonormal":
        q = orthonormal(2 * ms)
        return q[:ms], q[ms:]
    if geometry == "routers-orthonormal":
        return orthonormal(ms), random_unit(ms)
    if geometry == "experts-orthonormal":
        return random_unit(ms), orthonormal(ms)
    # geometry == "gram": realise the given Gram with a random rotation.
    g = np.asarray(spec.teacher.gram)
    w, u = np.linalg.eigh(g)
    root = u * np.sqrt(np.clip(w, 0, None))  # rows: coordinates in eigenbasis
    k = 2 * ms
    if d < k:
        keep = np.argsort(w)[::-1][:d]
        root = root[:, keep]
    q, _ = np.linalg.qr(rng.standard_normal((d, root.shape[1])))
    t = root @ q.T
    t /= np.linalg.norm(t, axis=1, keepdims=True)
    return t[:ms], t[ms:]


def _orthogonalise_routers(V: np.ndarray, W: np.ndarray) -> np.ndarray:
    Wbar = W / np.linalg.norm(W, axis=1, keepdims=True)
    return V - np.sum(V * Wbar, axis=1, keepdims=True) * Wbar


def sample_vectors(spec: MoESpec, seed: int | None = None):
    """(V, W, V⋆, W⋆) in R^d: students i.i.d. N(0, I_d/d), teacher unit vectors."""
    rng = np.random.default_rng(spec.init.seed if seed is None else seed)
    V_star, W_star = teacher_vectors(spec, rng)
    V = rng.standard_normal((spec.m, spec.d)) / np.sqrt(spec.d)
    W = rng.standard_normal((spec.m, spec.d)) / np.sqrt(spec.d)
    if spec.init.router == "orthogonal":
        V = _orthogonalise_routers(V, W)
    return V, W, V_star, W_star


def unit_rows(U) -> tuple[np.ndarray, np.ndarray]:
    """(U / ‖U‖ row-wise, ‖U‖) without overflow or underflow: each row is first divided by its
    largest absolute entry, so rows of size 1e±300 give the same directions as rows of size 1.
    A norm beyond the float64 range comes back as inf (its direction is still exact); an all-zero
    row gives a zero norm and a NaN direction (callers refuse those first)."""
    U = np.asarray(U, dtype=np.float64)
    scale = np.max(np.abs(U), axis=1) if U.shape[1] else np.zeros(U.shape[0])
    safe = np.where(scale > 0, scale, 1.0)
    S = U / safe[:, None]
    inner = np.linalg.norm(S, axis=1)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        Ubar = S / inner[:, None]
        norms = scale * inner
    return Ubar, norms


def gram_from_vectors(V, W, V_star, W_star, field: str = "vectors") -> tuple[np.ndarray, np.ndarray]:
    """Unit-direction Gram matrix and norms of [V; W; V⋆; W⋆] (rows need not be unit; any scale
    in the float64 range gives the same directions, see :func:`unit_rows`)."""
    U = np.concatenate([np.asarray(a, dtype=np.float64) for a in (V, W, V_star, W_star)])
    if not np.all(np.isfinite(U)):
        raise SpecError(field, "vectors must be finite (found NaN or inf)")
    zero = ~np.any(U != 0, axis=1)
    if np.any(zero):
        raise SpecError(field, f"vectors must be non-zero; zero rows: {np.flatnonzero(zero).tolist()}")
    Ubar, norms = unit_rows(U)
    G = Ubar @ Ubar.T
    np.fill_diagonal(G, 1.0)
    return 0.5 * (G + G.T), norms


def sample_gram(spec: MoESpec, seed: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Gram matrix and norms with the law of :func:`sample_vectors`, without vectors in R^d.

    Needs the orthonormal teacher (other geometries: use :func:`sample_vectors`).
    """
    if spec.teacher.geometry != "orthonormal":
        raise SpecError("init.sampler", "the 'gram' sampler needs teacher.geometry = 'orthonormal'")
    rng = np.random.default_rng(spec.init.seed if seed is None else seed)
    m, ms, d = spec.m, spec.m_star, spec.d
    k, n = 2 * m, d - 2 * ms  # student vectors, residual dimension
    Y = rng.standard_normal((k, 2 * ms)) / np.sqrt(d)  # components on the teacher coordinates
    if n >= k:
        # Bartlett: Z Zᵀ ~ Wishart_k(n, I) with Z Zᵀ = L Lᵀ.
        L = np.tril(rng.standard_normal((k, k)), -1)
        L[np.diag_indices(k)] = np.sqrt(rng.chisquare(n - np.arange(k)))
        H_res = (L @ L.T) / d
    else:
        Z = rng.standard_normal((k, n)) / np.sqrt(d)
        H_res = Z @ Z.T
    H = np.zeros((k + 2 * ms, k + 2 * ms))
    H[:k, :k] = Y @ Y.T + H_res
    H[:k, k:] = Y
    H[k:, :k] = Y.T
    H[k:, k:] = np.eye(2 * ms)
    if spec.init.router == "orthogonal":
        # v_i ← v_i − (v_iᵀw_i / ‖w_i‖²) w_i, a linear map T on the raw vectors: H ← T H Tᵀ.
        T = np.eye(k + 2 * ms)
        for i in range(m):
            T[i, m + i] = -H[i, m + i] / H[m + i, m + i]
        H = T @ H @ T.T
    norms = np.sqrt(np.diag(H))
    G = H / np.outer(norms, norms)
    np.fill_diagonal(G, 1.0)
    return 0.5 * (G + G.T), norms


ORTHO_TOL = 1e-8


def check_teacher_geometry(spec: MoESpec, V_star, W_star, field: str = "teacher.geometry") -> None:
    """Raise SpecError if the teacher vectors do not have the declared geometry (tolerance 1e-8)."""
    geometry = spec.teacher.geometry
    ms = spec.m_star
    T = np.concatenate([V_star, W_star])
    norms = np.linalg.norm(T, axis=1)
    if np.max(np.abs(norms - 1)) > ORTHO_TOL:
        raise SpecError(field, f"teacher vectors must be unit vectors; norms range "
                               f"[{norms.min():.6g}, {norms.max():.6g}]")
    G = T @ T.T
    blocks = {"orthonormal": (slice(0, 2 * ms), "all 2m⋆ teacher vectors"),
              "routers-orthonormal": (slice(0, ms), "the teacher routers V_star"),
              "experts-orthonormal": (slice(ms, 2 * ms), "the teacher experts W_star")}
    if geometry in blocks:
        sl, what = blocks[geometry]
        dev = np.max(np.abs(G[sl, sl] - np.eye(G[sl, sl].shape[0])))
        if dev > ORTHO_TOL:
            raise SpecError(field, f"declared {geometry!r} but {what} are not orthonormal "
                                   f"(max |Gram − I| = {dev:.3g}); allowed: {list(blocks) + ['gram']}")
    elif geometry == "gram":
        dev = np.max(np.abs(G - np.asarray(spec.teacher.gram)))
        if dev > ORTHO_TOL:
            raise SpecError(field, f"the given teacher vectors do not have teacher.gram (max deviation {dev:.3g})")


def load_vectors(spec: MoESpec):
    """Read and check the explicit initial state named by ``init.vectors``.

    A missing, truncated or corrupt file, a single-array ``.npy``, missing arrays, and arrays that
    are not real numbers (complex, strings, objects) are refused with one line naming the field.
    """
    import zipfile
    import zlib
    from pathlib import Path

    path = Path(spec.init.vectors)
    names = ("V", "W", "V_star", "W_star")
    usage = "save it with np.savez(path, V=V, W=W, V_star=V_star, W_star=W_star)"
    broken = (zipfile.BadZipFile, zlib.error, EOFError, ValueError, OSError, KeyError, NotImplementedError)
    if not path.is_file():
        raise SpecError("init.vectors", f"no such file: {path}")

    def one_line(err):
        return " ".join(str(err).split())[:200]

    with open(path, "rb") as fh:
        magic = fh.read(6)
    if not (magic.startswith(b"PK\x03\x04") or magic.startswith(b"\x93NUMPY")):
        what = "is empty" if not magic else "is not an .npz archive (no zip signature; truncated or another format?)"
        raise SpecError("init.vectors", f"{path} {what}; {usage}")
    try:
        data = np.load(path, allow_pickle=False)
    except broken as err:
        raise SpecError("init.vectors", f"{path} is not a readable .npz file (truncated or corrupt?): "
                                        f"{one_line(err)}; {usage}") from None
    if not isinstance(data, np.lib.npyio.NpzFile):
        raise SpecError("init.vectors", f"{path} holds a single array, not an .npz archive of V, W, V_star, W_star; {usage}")
    arrays = {}
    with data:
        missing = [k for k in names if k not in data.files]
        if missing:
            raise SpecError("init.vectors", f"{path} lacks the arrays {missing} (it has {sorted(data.files)}); {usage}")
        for k in names:
            try:
                a = np.asarray(data[k])
            except ValueError as err:
                if "allow_pickle" not in str(err):
                    raise SpecError(f"init.vectors.{k}", f"array {k} in {path} cannot be read: {one_line(err)}") from None
                raise SpecError(f"init.vectors.{k}", "holds Python objects (pickled), which are refused; "
                                                     "it must be an array of real numbers") from None
            except broken as err:
                raise SpecError(f"init.vectors.{k}", f"array {k} in {path} cannot be read (truncated or corrupt "
                                                     f"file?): {one_line(err)}") from None
            if a.dtype.kind not in "biuf":
                raise SpecError(f"init.vectors.{k}", f"must hold real numbers, got dtype {a.dtype}"
                                                     + (" (complex input is refused)" if a.dtype.kind == "c" else ""))
            arrays[k] = a.astype(np.float64)
    shapes = {"V": (spec.m, spec.d), "W": (spec.m, spec.d), "V_star": (spec.m_star, spec.d),
              "W_star": (spec.m_star, spec.d)}
    for k, shape in shapes.items():
        if arrays[k].shape != shape:
            raise SpecError(f"init.vectors.{k}", f"must have shape {shape} (m, m⋆, d of model), got {arrays[k].shape}")
    check_teacher_geometry(spec, arrays["V_star"], arrays["W_star"])
    return arrays["V"], arrays["W"], arrays["V_star"], arrays["W_star"]


def initial_state(spec: MoESpec, seed: int | None = None) -> InitialState:
    if spec.init.vectors is not None:
        vecs = load_vectors(spec)
        G, r = gram_from_vectors(*vecs, field="init.vectors")
        return InitialState(G, r, vecs)
    if spec.init.sampler == "gram":
        G, r = sample_gram(spec, seed)
        return InitialState(G, r, None)
    vecs = sample_vectors(spec, seed)
    G, r = gram_from_vectors(*vecs)
    return InitialState(G, r, vecs)
