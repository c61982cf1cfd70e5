"""Pruning rules and the `flowmoe prune` command (docs/maths.md §5).

Independent references: the odd symmetry of He₃ (a cancelling pair adds nothing to f), Gram
matrices rebuilt from the raw vectors with rows deleted, the population loss of those vectors
through the raw-vector API, and the oracle (teacher) rule on converged runs.
"""

import json
import shutil

import numpy as np
import pytest

import flowmoe
from flowmoe.cli import main
from flowmoe.errors import SpecError
from flowmoe.finetune import load_run
from flowmoe.init import gram_from_vectors
from flowmoe.prune import RULES, Network, make_rule, prune, subset_losses
from flowmoe.run import run_job



def unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def synthetic(rng, d=9, eps=1e-3, pair_router=1.0, pair_expert=-1.0):
    """Orthonormal teacher (m⋆ = 2); students 0, 3 aligned with teachers 0, 1 up to ε; students
    (1, 4) and (2, 5) are cancelling pairs: same router direction up to ``pair_router``, expert
    directions with overlap ``pair_expert`` (−1: exactly opposite). Returns (V, W, V⋆, W⋆)."""
    q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    Vs, Ws = q[:2], q[2:4]
    V = np.zeros((6, d))
    W = np.zeros((6, d))
    V[[0, 3]] = unit(Vs + eps * rng.standard_normal((2, d)))
    W[[0, 3]] = unit(Ws + eps * rng.standard_normal((2, d)))
    for a, b in ((1, 4), (2, 5)):
        v, w, n1, n2 = unit(rng.standard_normal((4, d)))
        n1, n2 = unit(n1 - (n1 @ v) * v), unit(n2 - (n2 @ w) * w)
        V[a], W[a] = v, w
        V[b] = pair_router * v + np.sqrt(1 - pair_router**2) * n1
        W[b] = pair_expert * w + np.sqrt(1 - pair_expert**2) * n2
    scale = rng.uniform(0.8, 1.2, (2, 6, 1))
    return V * scale[0], W * scale[1], Vs, Ws


def network_of(V, W, Vs, Ws):
    G, r = gram_from_vectors(V, W, Vs, Ws)
    return Network(G, r, V.shape[0], Vs.shape[0])


def test_removing_an_exact_cancelling_pair_keeps_the_function(rng):
    V, W, Vs, Ws = synthetic(rng)
    net = network_of(V, W, Vs, Ws)
    keep = [0, 3, 2, 5]  # drop the exact pair (1, 4)
    pruned = net.remove([1, 4])
    assert pruned.labels == (0, 2, 3, 5) and pruned.m == 4
    # The pruned Gram is the Gram of the remaining vectors, built from scratch.
    G_ref, r_ref = gram_from_vectors(V[sorted(keep)], W[sorted(keep)], Vs, Ws)
    np.testing.assert_allclose(pruned.gram, G_ref, atol=1e-14)
    np.testing.assert_allclose(pruned.norms, r_ref, rtol=1e-14)
    # He₃ is odd: π(v̄ᵀx)He₃(w̄ᵀx) + π(v̄ᵀx)He₃(−w̄ᵀx) = 0, so the loss (computed with a different
    # kernel size) is unchanged.
    assert abs(net.loss() - pruned.loss()) < 1e-12
    assert abs(pruned.loss() - flowmoe.population_loss(V[sorted(keep)], W[sorted(keep)], Vs, Ws)) < 1e-12


def test_subset_losses_match_the_loss_of_the_pruned_vectors(rng):
    V, W, Vs, Ws = synthetic(rng, pair_router=0.9, pair_expert=-0.8)
    net = network_of(V, W, Vs, Ws)
    K = net.unit_kernel()
    assert np.allclose(K, K.T)
    groups = [(), (0,), (4,), (1, 4), (0, 5), (2, 3)]
    fast = subset_losses(K, net.m, np.ones(net.m, bool), groups)
    for g, value in zip(groups, fast):
        rest = [i for i in range(net.m) if i not in g]
        assert abs(value - flowmoe.population_loss(V[rest], W[rest], Vs, Ws)) < 1e-11


def test_every_rule_removes_the_cancelling_pairs(rng):
    V, W, Vs, Ws = synthetic(rng, pair_router=0.9999, pair_expert=-0.9999)
    net = network_of(V, W, Vs, Ws)
    for name in RULES:
        result = prune(net, name)
        assert result.removed == [1, 2, 4, 5], name
        assert result.kept == [0, 3]
        # What is left is the aligned students: the loss is O(ε²) ≈ 1e-6 (ε = 1e-3).
        assert result.loss_after < 1e-4 and result.loss_after == pytest.approx(result.network.loss())
    oracle = prune(net, "oracle").details["kept_per_teacher"]
    assert [(d["teacher"], d["student"]) for d in oracle] == [(0, 0), (1, 3)]


def test_where_the_teacher_free_rules_differ(rng):
    """Student 1 sits exactly on teacher 1 and a stray student 2 forms a rough cancelling pair with
    it (router overlap 0.97, expert overlap −0.97). The pair rules (cancel, cluster) remove both and
    lose teacher 1; greedy (on the loss) and the oracle remove only the stray one.

    Closed forms: with all three students f = f⋆ + (stray unit), and the stray unit has ⟨v̄, w̄⟩ = 0,
    so L = ½K_ii(0) = 3E[π²]; without students 1, 2 the error is teacher 1's unit: again 3E[π²]."""
    d = 9
    q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    Vs, Ws = q[:2], q[2:4]
    c, s = 0.97, np.sqrt(1 - 0.97**2)
    V = np.stack([Vs[0], Vs[1], c * Vs[1] + s * q[4]])
    W = np.stack([Ws[0], Ws[1], -(c * Ws[1] + s * q[5])])
    net = network_of(V, W, Vs, Ws)
    three_E_pi2 = 3 * 0.2933790359  # docs/maths.md §3: E[π²] for the sigmoid
    assert net.loss() == pytest.approx(three_E_pi2, abs=1e-9)
    for name in ("cancel", "cluster"):
        result = prune(net, name)
        assert result.removed == [1, 2], name
        assert result.loss_after == pytest.approx(three_E_pi2, abs=1e-9)
    for name in ("greedy", "oracle"):
        result = prune(net, name)
        assert result.removed == [2], name
        assert result.loss_after < 1e-12


def test_cluster_rule_keeps_one_of_a_same_sign_cluster(rng):
    """Three students on one line: (v, w), (v, w), (v, −w) sum to ≈ π He₃ (net count 1): keep one."""
    d = 6
    q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    Vs, Ws = q[:1], q[1:2]
    V = np.stack([Vs[0], Vs[0] + 1e-4 * q[2], Vs[0] + 1e-4 * q[3]])
    W = np.stack([Ws[0], Ws[0] + 1e-4 * q[4], -Ws[0] + 1e-4 * q[5]])
    net = network_of(V, W, Vs, Ws)
    result = prune(net, "cluster")
    assert len(result.removed) == 2 and result.details["changed_clusters"] == []
    # The kept student has the majority sign (keeping (v, −w) would give L ≈ 2·E[f⋆²] ≈ 3.5).
    assert result.kept in ([0], [1])
    assert result.loss_before < 1e-6 and result.loss_after < 1e-6


def test_rules_agree_with_the_oracle_on_a_converged_run(small_run_dir):
    net = load_run(small_run_dir).network()
    oracle = prune(net, "oracle")
    assert oracle.details["below_threshold"] == []
    assert len(oracle.kept) == net.m_star
    for name in ("cancel", "greedy", "cluster"):
        result = prune(net, name)
        assert result.removed == oracle.removed, name
        assert result.loss_after == pytest.approx(oracle.loss_after, rel=1e-12)


def test_bad_rule_names_and_parameters():
    with pytest.raises(SpecError, match="allowed: .*'cancel'.*'oracle'") as err:
        make_rule("magic")
    assert err.value.field == "rule"
    with pytest.raises(SpecError) as err:
        make_rule("oracle", threshold=1.5)
    assert err.value.field == "rule.threshold"
    with pytest.raises(SpecError) as err:
        make_rule("greedy", tol=-1)
    assert err.value.field == "rule.tol"
    with pytest.raises(SpecError, match="not a parameter") as err:
        make_rule("cancel", threshold=0.9)
    with pytest.raises(SpecError):
        Network(np.eye(5), np.ones(5), 1, 1)  # wrong shape for m = m⋆ = 1


def test_prune_command_end_to_end(small_run_dir, tmp_path, capsys):
    out = tmp_path / "pruned"
    assert main(["prune", str(small_run_dir), "--rule", "cancel", "--out", str(out)]) == 0
    record = json.loads((out / "finetune.json").read_text())
    for key in ("removed", "loss_before", "loss_after_prune", "final_loss", "fitted_rate", "predicted_rate"):
        assert key in record
    net = load_run(small_run_dir).network()
    assert record["removed"] == prune(net, "oracle").removed
    assert record["final_loss"] <= 1e-10
    assert abs(record["fitted_rate"] - record["predicted_rate"]) <= 0.1 * record["predicted_rate"]
    assert (out / "finetune.png").stat().st_size > 10_000 and (out / "finetune.svg").exists()
    assert flowmoe.Trajectory.load(out / "finetune_trajectory.npz").m == net.m_star
    said = capsys.readouterr()
    assert "fitted rate" in said.out
    for name in ("finetune.json", "finetune_trajectory.npz", "finetune.png", "finetune.svg"):  # every file written
        assert name in said.out.split("wrote", 1)[1]
    assert record["status"] == "complete"
    assert record["command"] == f"flowmoe prune {small_run_dir} --rule cancel --out {out}"


def test_ctrl_c_during_prune_saves_the_stages_done(small_run_dir, tmp_path, monkeypatch, capsys):
    """Ctrl-C while fine-tuning: finetune.json holds the pruning and the predicted rate that were
    finished, "status": "interrupted"; one line on stderr; exit 130."""
    import flowmoe.finetune

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(flowmoe.finetune, "finetune", interrupted)
    out = tmp_path / "pruned"
    assert main(["prune", str(small_run_dir), "--rule", "cancel", "--out", str(out), "--quiet"]) == 130
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "interrupted" in err and "Traceback" not in err
    record = json.loads((out / "finetune.json").read_text())
    assert record["status"] == "interrupted" and record["stages_done"] == ["prune", "hessian"]
    net = load_run(small_run_dir).network()
    assert record["removed"] == prune(net, "oracle").removed          # the pruning that was done
    assert record["predicted_rate"] > 0 and "final_loss" not in record
    assert not (out / "finetune_trajectory.npz").exists()
    code = main(["plot", "finetune", str(out)])                       # the figure cannot be made: one line
    assert code == 2 and "finetune_trajectory.npz" in capsys.readouterr().err


def _error_of(argv, capsys):
    code = main(argv)
    err = capsys.readouterr().err.strip()
    return code, err


def test_prune_command_bad_input(small_run_dir, tmp_path, capsys):
    out = str(tmp_path / "o")
    code, err = _error_of(["prune", str(tmp_path / "missing"), "--rule", "oracle", "--out", out], capsys)
    assert code == 2 and "run_dir" in err and "no such folder" in err and "\n" not in err

    code, err = _error_of(["prune", str(small_run_dir), "--rule", "magic", "--out", out], capsys)
    assert code == 2 and "unknown pruning rule 'magic'" in err and "allowed" in err

    code, err = _error_of(["prune", str(small_run_dir), "--rule", "oracle", "--at", "1e6", "--out", out],
                          capsys)
    assert code == 2 and err.startswith("flowmoe prune: error: at:")

    corrupt = tmp_path / "corrupt"
    shutil.copytree(small_run_dir, corrupt)
    data = (corrupt / "trajectory.npz").read_bytes()
    (corrupt / "trajectory.npz").write_bytes(data[: len(data) // 3])  # truncated zip
    code, err = _error_of(["prune", str(corrupt), "--rule", "oracle", "--out", out], capsys)
    assert code == 2 and "run_dir" in err and "trajectory.npz" in err

    (corrupt / "summary.json").write_text("{not json")
    code, err = _error_of(["prune", str(corrupt), "--rule", "oracle", "--out", out], capsys)
    assert code == 2 and "summary.json" in err

    # summary.json of another spec next to this trajectory.
    other = tmp_path / "other"
    shutil.copytree(small_run_dir, other)
    record = json.loads((other / "summary.json").read_text())
    record["spec"]["model"]["d"] = 9
    (other / "summary.json").write_text(json.dumps(record))
    code, err = _error_of(["prune", str(other), "--rule", "oracle", "--out", out], capsys)
    assert code == 2 and "different specs" in err
    record["spec"]["model"]["m"] = 5
    (other / "summary.json").write_text(json.dumps(record))
    code, err = _error_of(["prune", str(other), "--rule", "oracle", "--out", out], capsys)
    assert code == 2 and "different runs" in err
    record["spec"]["model"]["gate"] = "nonsense"
    (other / "summary.json").write_text(json.dumps(record))
    code, err = _error_of(["prune", str(other), "--rule", "oracle", "--out", out], capsys)
    assert code == 2 and "model.gate" in err
    assert not (tmp_path / "o").exists()


@pytest.mark.long  # 34 s; test_prune_command_end_to_end covers the command at a small size
def test_paper_fig1_default_run_pruning_and_finetuning(tmp_path):
    """The default preset (paper-fig1, t_end = 400): every rule removes the oracle's 20 students;
    oracle pruning then fine-tuning reaches L ≤ 1e-10 with the fitted rate within 10% of 2λ_min.
    Earlier, at t = 290, the pairs are not yet cancelled: the rules differ, and for each pair that
    the cancel rule removes but greedy keeps, removing it raises the loss by more than greedy's tol."""
    from flowmoe.finetune import prune_and_finetune

    run_job(flowmoe.load_preset("paper-fig1"), tmp_path / "run", progress=False)
    run = load_run(tmp_path / "run")
    net = run.network()
    oracle = prune(net, "oracle")
    assert len(oracle.kept) == 5 and oracle.details["below_threshold"] == []
    for name in ("cancel", "greedy", "cluster"):
        assert prune(net, name).removed == oracle.removed, name
    record = prune_and_finetune(run, make_rule("oracle"), tmp_path / "ft")
    assert record["final_loss"] <= 1e-10
    assert record["rate_relative_difference"] <= 0.1

    early = run.network(int(np.argmin(np.abs(run.traj.t - 290))))
    cancel = prune(early, "cancel")
    greedy = prune(early, make_rule("greedy", tol=1e-3))
    assert greedy.removed != cancel.removed
    state = greedy.network  # where greedy stopped
    kept_by_greedy = [p["students"] for p in cancel.details["pairs"]
                      if set(p["students"]) <= set(state.labels)]
    assert kept_by_greedy
    for pair in kept_by_greedy:
        positions = [state.labels.index(s) for s in pair]
        assert state.remove(positions).loss() - state.loss() > 1e-3
