"""Explicit initial states and the declared teacher geometry."""

import numpy as np
import pytest

import flowmoe
from flowmoe.init import initial_state, sample_vectors


def _spec(tmp_path, arrays, **model):
    path = tmp_path / "state.npz"
    np.savez(path, **arrays)
    base = {"m": 3, "m_star": 2, "d": 8}
    base.update(model)
    return flowmoe.RunSpec.from_dict({"model": base, "init": {"vectors": str(path)}}).model


def _vectors(d=8, m=3, ms=2, seed=0):
    rng = np.random.default_rng(seed)
    Q, _ = np.linalg.qr(rng.standard_normal((d, 2 * ms)))
    return {"V": rng.standard_normal((m, d)), "W": rng.standard_normal((m, d)),
            "V_star": Q.T[:ms], "W_star": Q.T[ms:]}


def test_explicit_state_is_used_exactly(tmp_path):
    arrays = _vectors()
    st = initial_state(_spec(tmp_path, arrays))
    U = np.concatenate([arrays[k] for k in ("V", "W", "V_star", "W_star")])
    np.testing.assert_allclose(st.norms, np.linalg.norm(U, axis=1), rtol=1e-14)
    Ubar = U / np.linalg.norm(U, axis=1, keepdims=True)
    np.testing.assert_allclose(st.gram, Ubar @ Ubar.T, atol=1e-14)


def test_teacher_declared_orthonormal_but_not(tmp_path):
    arrays = _vectors()
    w = arrays["W_star"].copy()
    w[0] = (w[0] + 0.1 * arrays["V_star"][0])
    w[0] /= np.linalg.norm(w[0])
    arrays["W_star"] = w
    with pytest.raises(flowmoe.SpecError) as err:
        initial_state(_spec(tmp_path, arrays))
    assert err.value.field == "teacher.geometry" and "not orthonormal" in str(err.value)


def test_non_unit_teacher_and_wrong_shape(tmp_path):
    arrays = _vectors()
    arrays["V_star"] = 2 * arrays["V_star"]
    with pytest.raises(flowmoe.SpecError, match="unit vectors"):
        initial_state(_spec(tmp_path, arrays))
    with pytest.raises(flowmoe.SpecError) as err:
        initial_state(_spec(tmp_path, _vectors(d=9)))
    assert err.value.field == "init.vectors.V"


def test_missing_file():
    spec = flowmoe.RunSpec.from_dict({"model": {"m": 3, "m_star": 2, "d": 8},
                                      "init": {"vectors": "/nonexistent/state.npz"}}).model
    with pytest.raises(flowmoe.SpecError) as err:
        initial_state(spec)
    assert err.value.field == "init.vectors"


@pytest.mark.parametrize("geometry", ["orthonormal", "routers-orthonormal", "experts-orthonormal"])
def test_sampled_teachers_have_their_geometry(geometry):
    spec = flowmoe.RunSpec.from_dict({"model": {"m": 4, "m_star": 3, "d": 12},
                                      "teacher": {"geometry": geometry}}).model
    V, W, Vs, Ws = sample_vectors(spec)
    T = {"orthonormal": np.vstack([Vs, Ws]), "routers-orthonormal": Vs, "experts-orthonormal": Ws}[geometry]
    np.testing.assert_allclose(T @ T.T, np.eye(len(T)), atol=1e-12)
    np.testing.assert_allclose(np.linalg.norm(np.vstack([Vs, Ws]), axis=1), 1, atol=1e-12)
