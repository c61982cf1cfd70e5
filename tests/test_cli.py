"""The command line starts fast: help and the preset list load no numerical stack."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("jax", "jaxlib", "diffrax", "equinox", "sympy", "matplotlib", "scipy")
COMMANDS = ("run", "derive", "presets", "prune", "compare", "portrait", "plot", "verify", "rates")


def _python(code: str) -> str:
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("JAX_ENABLE_X64", None)
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == 0, res.stderr
    return res.stdout


def test_help_and_presets_import_no_numerical_library():
    code = f"""
import contextlib, io, json, sys
from flowmoe.commands import main
out = io.StringIO()
with contextlib.redirect_stdout(out):
    for argv in [["--help"]] + [[c, "--help"] for c in {COMMANDS!r}]:
        try:
            main(argv)
        except SystemExit:
            pass
    main(["presets"])
heavy = sorted(m for m in sys.modules if m.split(".")[0] in {HEAVY!r})
print(json.dumps({{"heavy": heavy, "out": out.getvalue()}}))
"""
    res = json.loads(_python(code).strip().splitlines()[-1])
    assert res["heavy"] == []
    for c in COMMANDS:  # every command's help was printed
        assert f"usage: flowmoe {c}" in res["out"]
    assert "paper-fig1" in res["out"] and "small" in res["out"]


def test_the_fast_preset_list_shows_the_checked_specs(capsys):
    from flowmoe.commands import main
    from flowmoe.presets import preset_names
    from flowmoe.spec import load_preset

    assert main(["presets"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(preset_names())
    for name, line in zip(preset_names(), lines):
        m = load_preset(name).model
        assert line.split() == [name, f"m={m.m}", f"m*={m.m_star}", f"d={m.d}", f"gate={m.gate}",
                                f"expert={m.expert}"]


def test_the_names_the_parser_offers_are_the_implemented_ones():
    from flowmoe.names import RATE_PRESETS
    from flowmoe.rates.presets import PRESETS

    assert tuple(PRESETS) == RATE_PRESETS


def test_lazy_package_keeps_float64_and_the_simulate_function():
    code = """
import flowmoe, sys
assert "jax" not in sys.modules
import flowmoe.simulate            # the submodule of the same name as the function
import jax.numpy as jnp
print(jnp.ones(2).dtype, callable(flowmoe.simulate), type(flowmoe.simulate).__name__,
      flowmoe.population_loss.__module__)
"""
    assert _python(code).split() == ["float64", "True", "function", "flowmoe.api"]
    code = "import jax, flowmoe.kernel, jax.numpy as jnp; print(jnp.ones(2).dtype)"  # JAX imported first
    assert _python(code).strip() == "float64"
    code = """
import flowmoe
print(flowmoe.init.initial_state.__module__, flowmoe.observables.matching.__module__, hasattr(flowmoe, "nonsense"))
"""  # submodules are reachable from the package alone, as before
    assert _python(code).split() == ["flowmoe.init", "flowmoe.observables", "False"]


def test_python_dash_m_flowmoe_runs_the_command_line():
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    res = subprocess.run([sys.executable, "-m", "flowmoe", "presets"], capture_output=True, text=True, env=env,
                         timeout=120)
    assert res.returncode == 0 and "paper-fig1" in res.stdout


@pytest.mark.parametrize("argv", [["nonsense"], ["run", "--preset", "nope"]])
def test_bad_command_lines_are_one_line_errors(argv):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    res = subprocess.run([sys.executable, "-m", "flowmoe", *argv], capture_output=True, text=True, env=env,
                         timeout=120)
    assert res.returncode == 2 and "Traceback" not in res.stderr


@pytest.mark.parametrize("argv, attr, expected", [
    (["run", "--preset", "small", "--set", "solver.t_end=5", "--set", "solver.n_save=11"], "set",
     ["solver.t_end=5", "solver.n_save=11"]),
    (["run", "--set", "model.m=4", "solver.t_end=5", "--set", "model.d=20"], "set",
     ["model.m=4", "solver.t_end=5", "model.d=20"]),
    (["compare", "--method", "online-sgd", "--method", "population-gd"], "method", ["online-sgd", "population-gd"]),
    (["portrait", "--fix", "mu=0", "--fix", "nu=0"], "fix", ["mu=0", "nu=0"]),
])
def test_a_repeated_list_option_accumulates_instead_of_dropping_the_first(argv, attr, expected):
    """`--set a=1 --set b=2` once kept only b=2 (argparse's default 'store' action), silently
    running a different spec than the one typed."""
    from flowmoe.commands import build_parser

    assert getattr(build_parser().parse_args(argv), attr) == expected


def test_two_set_flags_both_reach_the_spec():
    from flowmoe.commands import build_parser, resolve_spec

    args = build_parser().parse_args(["run", "--preset", "small", "--set", "solver.t_end=5", "--set", "solver.n_save=11"])
    spec = resolve_spec(args)
    assert (spec.solver.t_end, spec.solver.n_save) == (5.0, 11)



@pytest.mark.parametrize("argv", [["verify", "--scaling", "d", "--d", "0"], ["run", "--pre", "small"],
                                  ["compare", "--bat", "10"]])
def test_an_abbreviated_option_is_refused_not_guessed(argv, capsys):
    """argparse's prefix matching took `verify --d 0` for `--delta-P 0` and ran a whole sweep."""
    from flowmoe.commands import build_parser

    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(argv)
    assert exc.value.code == 2
    assert "unrecognized arguments" in capsys.readouterr().err
