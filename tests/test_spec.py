"""Bad input gives flowmoe.SpecError naming the offending field (DESIGN: never a deep traceback or NaN).

Each row of the problem tables is one bad input and the field the error must name. The CLI turns
the same errors into a one-line message and exit code 2, before any solve starts.
"""

import numpy as np
import pytest

import flowmoe
from flowmoe import SpecError
from flowmoe.spec import MoESpec, RunSpec, TeacherSpec


def _field_of(call):
    with pytest.raises(SpecError) as info:
        call()
    err = info.value
    assert isinstance(err, ValueError)
    assert str(err).startswith(f"{err.field}:")
    return err


# --- model specs ---------------------------------------------------------------------------------------

NOT_PSD = [[1.0, 1.5], [1.5, 1.0]]  # eigenvalues 2.5, −0.5
NOT_UNIT = [[2.0, 0.0], [0.0, 1.0]]

SPEC_TABLE = [
    ("m = 0", dict(m=0, m_star=1, d=10), "model.m"),
    ("m < 0", dict(m=-3, m_star=1, d=10), "model.m"),
    ("m non-integer", dict(m=2.5, m_star=1, d=10), "model.m"),
    ("m a string", dict(m="3", m_star=1, d=10), "model.m"),
    ("m a bool", dict(m=True, m_star=1, d=10), "model.m"),
    ("m_star = m", dict(m=3, m_star=3, d=10), "model.m_star"),
    ("m_star > m", dict(m=2, m_star=4, d=10), "model.m_star"),
    ("m_star = 0", dict(m=2, m_star=0, d=10), "model.m_star"),
    ("d < 2 m_star, orthonormal teacher", dict(m=3, m_star=2, d=3), "model.d"),
    ("unknown gate", dict(m=2, m_star=1, d=4, gate="relu"), "model.gate"),
    ("unknown expert", dict(m=2, m_star=1, d=4, expert="cubic"), "model.expert"),
    ("expert He0", dict(m=2, m_star=1, d=4, expert="he0"), "model.expert"),
    ("teacher Gram not PSD", dict(m=2, m_star=1, d=4, teacher=TeacherSpec("gram", NOT_PSD)), "teacher.gram"),
    ("teacher Gram not unit diagonal", dict(m=2, m_star=1, d=4, teacher=TeacherSpec("gram", NOT_UNIT)),
     "teacher.gram"),
    ("teacher Gram wrong size", dict(m=2, m_star=1, d=4, teacher=TeacherSpec("gram", np.eye(3).tolist())),
     "teacher.gram"),
]


@pytest.mark.parametrize("what,kwargs,field", SPEC_TABLE, ids=[row[0] for row in SPEC_TABLE])
def test_bad_model_spec(what, kwargs, field):
    assert _field_of(lambda: MoESpec(**kwargs)).field == field


def test_errors_state_allowed_values():
    assert "sigmoid" in str(_field_of(lambda: MoESpec(m=2, m_star=1, d=4, gate="relu")))
    assert "he3" in str(_field_of(lambda: MoESpec(m=2, m_star=1, d=4, expert="cubic")))
    err = _field_of(lambda: flowmoe.load_preset("nope"))
    assert err.field == "preset" and "small" in str(err) and "paper-fig1" in str(err)


def test_good_spec_is_accepted():
    """The boundary cases just inside the allowed region are accepted (the table above is not vacuous)."""
    MoESpec(m=2, m_star=1, d=2)
    MoESpec(m=2.0, m_star=1, d=4)
    MoESpec(m=2, m_star=1, d=4, teacher=TeacherSpec("gram", [[1.0, 0.3], [0.3, 1.0]]))


# --- presets and overrides ---------------------------------------------------------------------------------

OVERRIDE_TABLE = [
    ("unknown field", ["model.foo=1"], "model.foo"),
    ("unknown section", ["bogus.m=1"], "bogus.m"),
    ("no section", ["m=3"], "m"),
    ("m = 0", ["model.m=0"], "model.m"),
    ("m non-integer", ["model.m=2.5"], "model.m"),
    ("unknown gate", ["model.gate=relu"], "model.gate"),
    ("unknown backend", ["solver.backend=euler"], "solver.backend"),
]


@pytest.mark.parametrize("what,overrides,field", OVERRIDE_TABLE, ids=[row[0] for row in OVERRIDE_TABLE])
def test_bad_override(what, overrides, field):
    spec = flowmoe.load_preset("small")
    assert _field_of(lambda: spec.with_overrides(overrides)).field == field


def test_unknown_field_in_config_dict():
    assert _field_of(lambda: RunSpec.from_dict({"model": {"m": 3, "experts": 2}})).field == "model.experts"
    assert _field_of(lambda: RunSpec.from_dict({"modle": {"m": 3}})).field == "modle"


def test_bad_preset_name():
    assert _field_of(lambda: flowmoe.load_preset("nope")).field == "preset"


# --- the Python API on raw vectors ---------------------------------------------------------------


def _vectors():
    rng = np.random.default_rng(0)
    V, W = rng.standard_normal((2, 3, 6))
    Vs, Ws = np.eye(6)[:2], np.eye(6)[2:4]
    return {"V": V, "W": W, "V_star": Vs, "W_star": Ws}


def _spoil(name, how):
    args = _vectors()
    a = args[name].copy()
    if how == "zero":
        a[1] = 0.0
    elif how == "nan":
        a[0, 2] = np.nan
    elif how == "inf":
        a[-1, 0] = np.inf
    args[name] = a
    return args


API_TABLE = [(name, how) for name in ("V", "W", "V_star", "W_star") for how in ("zero", "nan", "inf")]
TIMES = np.linspace(0.0, 1.0, 3)


@pytest.mark.parametrize("name,how", API_TABLE)
@pytest.mark.parametrize("function", ["population_loss", "population_grad", "gradient_flow"])
def test_bad_vectors(function, name, how):
    args = _spoil(name, how)
    fn = getattr(flowmoe, function)
    call = (lambda: fn(**args, times=TIMES)) if function == "gradient_flow" else (lambda: fn(**args))
    assert _field_of(call).field == name


@pytest.mark.parametrize("kwargs,field", [
    (dict(gate="relu"), "gate"), (dict(expert="cubic"), "expert"), (dict(expert="he0"), "expert")])
@pytest.mark.parametrize("function", ["population_loss", "population_grad"])
def test_bad_gate_or_expert_in_api(function, kwargs, field):
    assert _field_of(lambda: getattr(flowmoe, function)(**_vectors(), **kwargs)).field == field


@pytest.mark.parametrize("times", [[0.0, 2.0, 1.0], [0.0, 0.0, 1.0], [1.0, 0.5], [0.0, np.nan], [0.0]],
                         ids=["decreasing", "repeated", "backwards", "nan", "single"])
def test_times_must_increase(times):
    assert _field_of(lambda: flowmoe.gradient_flow(**_vectors(), times=times)).field == "times"


def test_shape_mismatch_names_the_array():
    args = _vectors()
    args["W"] = args["W"][:2]
    assert _field_of(lambda: flowmoe.population_loss(**args)).field == "W"
    args = _vectors()
    args["V_star"] = np.eye(7)[:2]
    args["W_star"] = np.eye(7)[2:4]
    assert _field_of(lambda: flowmoe.population_loss(**args)).field == "V_star"


# --- the command line -----------------------------------------------------------------------------


CLI_TABLE = [
    (["run", "--preset", "nope"], "preset"),
    (["run", "--set", "model.m=0"], "model.m"),
    (["run", "--preset", "small", "--set", "model.m_star=2"], "model.m_star"),
]


@pytest.mark.parametrize("argv,field", CLI_TABLE)
def test_cli_bad_input_is_one_line_and_exit_2(argv, field, capsys, monkeypatch, tmp_path):
    import flowmoe.cli
    import flowmoe.run

    def no_solve(*args, **kwargs):
        raise AssertionError("the CLI started a run on bad input")

    monkeypatch.setattr(flowmoe.run, "run_job", no_solve)
    monkeypatch.setattr(flowmoe.run, "integrate_spec", no_solve)
    monkeypatch.chdir(tmp_path)
    code = flowmoe.cli.main(argv)
    captured = capsys.readouterr()
    assert code == 2
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert f"error: {field}:" in lines[0] and "Traceback" not in captured.err
    assert not (tmp_path / "runs").exists()
