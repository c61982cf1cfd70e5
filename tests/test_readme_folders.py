"""`flowmoe plot KIND DIR` on the folder of every README command that writes one, and the "wrote"
line of each command naming every file it wrote.

Each README command runs here in a small, quick variant (small preset, short horizons, few seeds)
through the command line itself; the folders are then redrawn by every figure kind that reads them.
All but derive take over 20 s on a busy 2-core machine, so they are marked slow (CI runs them).
"""

from __future__ import annotations

import json

import pytest

from flowmoe.cli import main

SMALL_RUN = ["--preset", "small", "--set", "model.m=4", "model.m_star=2", "model.d=8", "solver.t_end=60",
             "solver.n_save=121"]


def _run(argv, capsys) -> str:
    assert main(argv) == 0, argv
    said = capsys.readouterr()
    return said.out + said.err


def _files(folder):
    return sorted(p.name for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))


def _check_wrote(folder, text):
    """Every file in ``folder`` is named on the command's output (its "wrote" line or path list)."""
    missing = [name for name in _files(folder) if name not in text]
    assert not missing, f"not listed: {missing}\n{text}"


def _plots(kinds, folder, tmp_path, capsys, extra=()):
    for kind in kinds:
        out = tmp_path / "figs" / f"{folder.name}-{kind}"
        code = main(["plot", kind, str(folder), "--out", str(out), *extra])
        said = capsys.readouterr()
        assert code == 0, (kind, said.err)
        assert out.with_suffix(".png").stat().st_size > 5_000 and out.with_suffix(".svg").is_file()
        assert f"{out}.png" in said.out


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("readme") / "run"
    assert main(["run", *SMALL_RUN, "--out", str(out), "--quiet"]) == 0
    return out


@pytest.mark.slow
def test_run_folder(run_dir, tmp_path, capsys):
    """`flowmoe run --out DIR`, `flowmoe plot alignment|loss DIR [--matching final]`."""
    out = tmp_path / "run"
    text = _run(["run", *SMALL_RUN, "--out", str(out), "--quiet"], capsys)
    _check_wrote(out, text)
    _plots(["alignment", "loss"], out, tmp_path, capsys)
    _plots(["loss"], out, tmp_path / "final", capsys, extra=["--matching", "final"])


@pytest.mark.slow
def test_prune_folder(run_dir, tmp_path, capsys):
    """`flowmoe prune RUN_DIR --rule oracle --out DIR`, `flowmoe plot finetune DIR`."""
    out = tmp_path / "prune"
    text = _run(["prune", str(run_dir), "--rule", "oracle", "--out", str(out), "--quiet"], capsys)
    _check_wrote(out, text)
    assert json.loads((out / "finetune.json").read_text())["status"] == "complete"
    _plots(["finetune"], out, tmp_path, capsys)


@pytest.mark.slow
def test_compare_folder(tmp_path, capsys):
    """`flowmoe compare --method online-sgd population-gd ... --out DIR --figure F`, `flowmoe plot compare DIR`."""
    out, fig = tmp_path / "compare", tmp_path / "fig" / "cmp"
    text = _run(["compare", "--preset", "small", "--set", "model.d=10", "--method", "online-sgd", "population-gd",
                 "--lr", "0.01", "--batch", "100", "--t-end", "0.5", "--out", str(out), "--figure", str(fig),
                 "--quiet"], capsys)
    _check_wrote(out, text)
    assert f"{fig}.png" in text and f"{fig}.svg" in text
    _plots(["compare"], out, tmp_path, capsys)


@pytest.mark.slow
def test_compare_study_folder(tmp_path, capsys):
    """`flowmoe compare --study --out DIR`, `flowmoe plot study DIR`."""
    out = tmp_path / "study"
    text = _run(["compare", "--study", "--preset", "small", "--set", "model.d=10", "--lr", "0.02", "--batch", "20",
                 "--t-end", "0.2", "--out", str(out), "--quiet"], capsys)
    _check_wrote(out, text)
    _plots(["study"], out, tmp_path, capsys)


@pytest.mark.slow
def test_portrait_folders(tmp_path, capsys):
    """`flowmoe portrait "--starts=…" --out DIR` and `--reduction symmetric --students 3`, `flowmoe plot portrait DIR`."""
    for name, argv in (("pair", ["--starts=-0.9,0.05;0.5,0.5"]), ("sym3", ["--reduction", "symmetric", "--students", "3"])):
        out = tmp_path / name
        text = _run(["portrait", *argv, "--grid", "11", "--fp-starts", "5", "--t-end", "3", "--out", str(out),
                     "--quiet"], capsys)
        _check_wrote(out, text)
        _plots(["portrait"], out, tmp_path, capsys)


@pytest.mark.slow
def test_portrait_slice_of_a_preset_folder(tmp_path, capsys):
    """`flowmoe portrait --preset paper-fig1 --t-end 40 --out DIR` (coarse), `flowmoe plot portrait DIR`."""
    out = tmp_path / "slice"
    text = _run(["portrait", "--preset", "paper-fig1", "--grid", "7", "--fp-starts", "3", "--t-end", "2",
                 "--out", str(out), "--quiet"], capsys)
    _check_wrote(out, text)
    _plots(["portrait"], out, tmp_path, capsys)


@pytest.mark.slow
@pytest.mark.parametrize("variable, values", [("d", "100,400"), ("m", "2,3")])
def test_verify_scaling_folders(variable, values, tmp_path, capsys):
    """`flowmoe verify --scaling d|m --out DIR`, `flowmoe plot scaling DIR`."""
    out = tmp_path / f"scaling-{variable}"
    text = _run(["verify", "--scaling", variable, "--preset", "small", "--values", values, "--seeds", "0-2",
                 "--n-boot", "100", "--out", str(out), "--quiet"], capsys)
    _check_wrote(out, text)
    _plots(["scaling"], out, tmp_path, capsys)


@pytest.mark.slow
def test_verify_claims_folder(tmp_path, capsys):
    """`flowmoe verify --seeds … --out DIR`: no figure kind reads it; the documents carry the command."""
    out = tmp_path / "verify"
    argv = ["verify", "--preset", "small", "--set", "solver.t_end=30", "--seeds", "0-1", "--finetune-t-end", "0",
            "--out", str(out), "--quiet"]
    text = _run(argv, capsys)
    _check_wrote(out, text)
    assert f"command: `flowmoe {' '.join(argv)}`" in (out / "verify.md").read_text()


@pytest.mark.slow
def test_rates_folder(tmp_path, capsys):
    """`flowmoe rates --preset NAME --out DIR`, `flowmoe plot rates DIR`."""
    out = tmp_path / "rates"
    argv = ["rates", "--preset", "softmax-exact-k2", "--n", "100", "200", "--reps", "2", "--out", str(out), "--quiet"]
    text = _run(argv, capsys)
    _check_wrote(out, text)
    assert f"command: `flowmoe {' '.join(argv)}`" in (out / "report.md").read_text()
    _plots(["rates"], out, tmp_path, capsys)


def test_derive_folder_names_the_command_that_made_it(tmp_path, capsys):
    """`flowmoe derive --out DIR --expert he1`: every file listed, each names this command."""
    out = tmp_path / "deriv"
    argv = ["derive", "--out", str(out), "--expert", "he1"]
    text = _run(argv, capsys)
    _check_wrote(out, text)
    docs = [name for name in _files(out) if name.endswith(".md")]
    assert docs and set(_files(out)) - set(docs) == {"expressions-he1.json"}  # the sidecar of expressions
    for name in docs:
        assert f"*Generated by `flowmoe {' '.join(argv)}`" in (out / name).read_text()
