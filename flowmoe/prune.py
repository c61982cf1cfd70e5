"""Pruning rules for a trained student, on the Gram matrix (docs/maths.md §5), and the ``flowmoe prune`` command.

After feature learning some students are redundant. The typical redundancy is a *cancelling pair*:
v̄_i = v̄_{i'} and w̄_i = −w̄_{i'} give π(v̄ᵀx)He₃(w̄ᵀx) + π(v̄ᵀx)He₃(−w̄ᵀx) = 0 because He₃ is odd,
so the pair contributes nothing to f and can be deleted without changing the loss.

A network is held as a :class:`Network`: the Gram matrix of the unit directions
[v̄_1..v̄_m, w̄_1..w̄_m, v⋆_1..v⋆_m⋆, w⋆_1..w⋆_m⋆], the norms and the structure. Removing student i
deletes rows/columns i and m + i and the two norms; m decreases and may reach m⋆ (no
:class:`~flowmoe.spec.MoESpec` is built for a pruned net, which would demand m⋆ < m).

Loss of any subset of students, without re-evaluating the kernel: with the unit kernel
K_{uu'} = E[f_u f_{u'}] (students s = +1, teachers s = −1) the loss is L = ½ zᵀKz with z_u = s_u
for kept units and 0 for removed ones (docs/maths.md §3).

Rules (each a :class:`PruningRule`; ``RULES`` maps the CLI names):

- ``oracle``  (uses the teacher): per teacher, keep the best-aligned student (greedy matching on
  min(γ⁽¹⁾, γ⁽²⁾)); it should pass ``threshold`` in both alignments; remove all others.
- ``cancel``  (teacher-free): remove pairs with v̄_iᵀv̄_{i'} ≥ 1 − tol and w̄_iᵀw̄_{i'} ≤ −(1 − tol).
- ``greedy``  (teacher-free, uses the loss only): repeatedly remove the single student or pair of
  students whose removal gives the lowest loss, while the loss rises by at most ``tol``.
- ``cluster`` (teacher-free): link students with v̄_iᵀv̄_{i'} ≥ 1 − tol and |w̄_iᵀw̄_{i'}| ≥ 1 − tol
  (the expert sign is free: (v̄, −w̄) is the negated unit); in each cluster count members with the
  sign of the first one as +1, the others −1; a cluster of net count 0 is removed entirely
  (it cancels), otherwise one member of the majority sign is kept.

Where the rules differ (each case is a test in tests/test_prune.py): the pair rules (cancel,
cluster) look at directions only, so they also remove a teacher-aligned student together with a
stray student that roughly cancels it, losing that teacher; greedy looks at the loss only, so it
keeps a rough pair whose output still helps to fit the residual (paper-fig1 at t = 290, before the
last pairs have cancelled) and it cannot remove a group that cancels only as a whole (it tries
single students and pairs). On converged runs (paper-fig1 at t = 400, the test run) all four
rules remove the same students.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field

import numpy as np

from .errors import SpecError
from .observables import greedy_matching


@dataclass(frozen=True, eq=False)
class Network:
    """A (possibly pruned) student–teacher network on the Gram matrix.

    ``labels[i]`` is the index that student i had in the network the run trained, so removals are
    reported in the run's numbering.
    """

    gram: np.ndarray
    norms: np.ndarray
    m: int
    m_star: int
    gate: str = "sigmoid"
    expert: str = "he3"
    labels: tuple = ()

    def __post_init__(self):
        G = np.array(self.gram, dtype=np.float64)
        r = np.array(self.norms, dtype=np.float64)
        m, ms = int(self.m), int(self.m_star)
        if m < 1 or ms < 1:
            raise SpecError("network", f"need m ≥ 1 and m⋆ ≥ 1, got m = {m}, m⋆ = {ms}")
        n = 2 * (m + ms)
        if G.shape != (n, n) or r.shape != (n,):
            raise SpecError("network", f"gram must be {n}×{n} and norms ({n},) for m = {m}, m⋆ = {ms}; "
                                       f"got {G.shape} and {r.shape}")
        if not (np.all(np.isfinite(G)) and np.all(np.isfinite(r))):
            raise SpecError("network", "gram and norms must be finite (found NaN or inf)")
        if np.any(r[:2 * m] <= 0):
            raise SpecError("network", "student norms must be > 0")
        labels = tuple(int(x) for x in (self.labels or range(m)))
        if len(labels) != m:
            raise SpecError("network", f"need {m} labels, got {len(labels)}")
        object.__setattr__(self, "gram", 0.5 * (G + G.T))
        object.__setattr__(self, "norms", r)
        object.__setattr__(self, "m", m)
        object.__setattr__(self, "m_star", ms)
        object.__setattr__(self, "labels", labels)

    @classmethod
    def from_trajectory(cls, traj, index: int = -1, gate: str = "sigmoid", expert: str = "he3") -> "Network":
        return cls(traj.gram[index], traj.norms[index], traj.m, traj.m_star, gate, expert)

    # Blocks ------------------------------------------------------------------------------
    @property
    def router_overlaps(self) -> np.ndarray:
        """v̄_iᵀv̄_{i'} (m × m)."""
        return self.gram[:self.m, :self.m]

    @property
    def expert_overlaps(self) -> np.ndarray:
        """w̄_iᵀw̄_{i'} (m × m)."""
        return self.gram[self.m:2 * self.m, self.m:2 * self.m]

    @property
    def router_alignment(self) -> np.ndarray:
        """γ⁽¹⁾_{ij} = v̄_iᵀv⋆_j (m × m⋆)."""
        m, ms = self.m, self.m_star
        return self.gram[:m, 2 * m:2 * m + ms]

    @property
    def expert_alignment(self) -> np.ndarray:
        """γ⁽²⁾_{ij} = w̄_iᵀw⋆_j (m × m⋆)."""
        m, ms = self.m, self.m_star
        return self.gram[m:2 * m, 2 * m + ms:]

    @property
    def teacher_gram(self) -> np.ndarray:
        return self.gram[2 * self.m:, 2 * self.m:]

    @property
    def student_norms(self) -> np.ndarray:
        return self.norms[:2 * self.m]

    # Loss --------------------------------------------------------------------------------
    def loss(self) -> float:
        from .backends.pair import gram_loss

        return float(gram_loss(self.gate, self.expert, self.m, self.m_star).loss(self.gram))

    def unit_kernel(self) -> np.ndarray:
        """K_{uu'} = E[f_u f_{u'}] over the m + m⋆ units (students first), symmetric."""
        from .backends.pair import gram_loss

        fn = gram_loss(self.gate, self.expert, self.m, self.m_star)
        K, _ = fn.pair_values(np.asarray(self.gram))
        iu, ju = fn.pairs
        out = np.zeros((self.m + self.m_star,) * 2)
        out[iu, ju] = np.asarray(K)
        out[ju, iu] = np.asarray(K)
        return out

    def remove(self, positions) -> "Network":
        """The network without the students at ``positions`` (current numbering)."""
        drop = sorted({int(p) for p in positions})
        if any(p < 0 or p >= self.m for p in drop):
            raise SpecError("removed", f"student positions must be in 0..{self.m - 1}, got {drop}")
        if len(drop) == self.m:
            raise SpecError("removed", "cannot remove every student")
        keep = [i for i in range(self.m) if i not in drop]
        keep_a = np.asarray(keep, dtype=int)
        idx = np.concatenate([keep_a, self.m + keep_a, 2 * self.m + np.arange(2 * self.m_star)])
        return Network(self.gram[np.ix_(idx, idx)], self.norms[idx], len(keep), self.m_star, self.gate,
                       self.expert, tuple(self.labels[i] for i in keep))


def subset_losses(K: np.ndarray, m: int, kept: np.ndarray, groups) -> np.ndarray:
    """Loss after removing each group of students from the kept set, L = ½ zᵀKz.

    ``kept`` is a boolean mask over the m students; ``groups`` a list of tuples of positions.
    """
    z = np.concatenate([kept.astype(float), -np.ones(K.shape[0] - m)])
    Kz = K @ z
    base = 0.5 * z @ Kz
    out = np.empty(len(groups))
    for n, g in enumerate(groups):
        g = list(g)
        # z' = z − Σ_{i∈g} e_i:  L' = L − Σ_i (Kz)_i + ½ Σ_{i,i'∈g} K_ii'.
        out[n] = base - Kz[g].sum() + 0.5 * K[np.ix_(g, g)].sum()
    return out


# Rules -----------------------------------------------------------------------------------
class PruningRule(abc.ABC):
    """A pruning rule. Contract for an implementation:

    1. ``name`` (class attribute): the name used by ``flowmoe prune --rule``.
    2. ``uses_teacher`` (class attribute): True if :meth:`select` reads student–teacher overlaps;
       a teacher-free rule may read the student–student overlaps and the loss only.
    3. ``params()``: the rule's parameters as a JSON-able dict (written into results).
    4. ``select(net)``: returns ``(positions, details)`` — the sorted positions (current numbering)
       of the students to remove and a JSON-able dict saying why. It is deterministic, does not
       modify ``net``, and never removes every student.
    """

    name: str = ""
    uses_teacher: bool = False

    @abc.abstractmethod
    def params(self) -> dict: ...

    @abc.abstractmethod
    def select(self, net: Network) -> tuple[list[int], dict]: ...


def _unit_interval(value, field: str, closed_high: bool = False) -> float:
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise SpecError(field, f"must be a number in (0, 1), got {value!r}") from None
    if not (0.0 < x < 1.0 or (closed_high and x == 1.0)):
        raise SpecError(field, f"must be in (0, 1), got {value!r}")
    return x


class Oracle(PruningRule):
    """Keep, per teacher j, the student i with the largest min(γ⁽¹⁾_{ij}, γ⁽²⁾_{ij}) (greedy
    matching, one student per teacher); remove every other student. Teachers whose kept student
    does not pass ``threshold`` in both alignments are listed in ``details["below_threshold"]``."""

    name = "oracle"
    uses_teacher = True

    def __init__(self, threshold: float = 0.9):
        self.threshold = _unit_interval(threshold, "rule.threshold")

    def params(self) -> dict:
        return {"threshold": self.threshold}

    def select(self, net):
        g1, g2 = net.router_alignment, net.expert_alignment
        score = np.minimum(g1, g2)
        pairs = greedy_matching(score)
        kept = {i for i, _ in pairs}
        removed = sorted(set(range(net.m)) - kept)
        per_teacher = [{"teacher": j, "student": net.labels[i], "router_alignment": float(g1[i, j]),
                        "expert_alignment": float(g2[i, j])} for i, j in pairs]
        below = [j for i, j in pairs if score[i, j] < self.threshold]
        return removed, {"kept_per_teacher": per_teacher, "below_threshold": below}


class CancellingPairs(PruningRule):
    """Remove pairs (i, i') with v̄_iᵀv̄_{i'} ≥ 1 − tol and w̄_iᵀw̄_{i'} ≤ −(1 − tol).

    Pairs are taken greedily by the score min(v̄_iᵀv̄_{i'}, −w̄_iᵀw̄_{i'}), each student at most once.
    Such a pair's joint output is O(tol) in L² (exactly zero when tol → 0)."""

    name = "cancel"

    def __init__(self, tol: float = 0.05):
        self.tol = _unit_interval(tol, "rule.tol")

    def params(self) -> dict:
        return {"tol": self.tol}

    def select(self, net):
        score = np.minimum(net.router_overlaps, -net.expert_overlaps)
        iu, ju = np.triu_indices(net.m, 1)
        s = score[iu, ju]
        used, pairs = set(), []
        for k in np.argsort(-s, kind="stable"):
            i, j = int(iu[k]), int(ju[k])
            if s[k] < 1.0 - self.tol:
                break
            if i in used or j in used:
                continue
            used |= {i, j}
            pairs.append((i, j))
        if len(used) == net.m:  # never remove every student: keep the weakest pair
            used -= set(pairs.pop())
        details = {"pairs": [{"students": [net.labels[i], net.labels[j]],
                              "router_overlap": float(net.router_overlaps[i, j]),
                              "expert_overlap": float(net.expert_overlaps[i, j])} for i, j in pairs]}
        return sorted(used), details


class Greedy(PruningRule):
    """Greedy removal on the loss: at each step try removing every single student and every pair
    of students, take the candidate with the lowest resulting loss, and accept it if the loss rises
    by at most ``tol`` (absolute); stop when no candidate is acceptable.

    Pairs are needed because one member of a cancelling pair alone is not redundant: removing it
    raises the loss by about ½E[(π He₃)²] ≥ 0.88."""

    name = "greedy"

    def __init__(self, tol: float = 1e-3):
        try:
            self.tol = float(tol)
        except (TypeError, ValueError):
            raise SpecError("rule.tol", f"must be a number ≥ 0, got {tol!r}") from None
        if not np.isfinite(self.tol) or self.tol < 0:
            raise SpecError("rule.tol", f"must be a finite number ≥ 0, got {tol!r}")

    def params(self) -> dict:
        return {"tol": self.tol}

    def select(self, net):
        K = net.unit_kernel()
        kept = np.ones(net.m, dtype=bool)
        loss = float(subset_losses(K, net.m, kept, [()])[0])
        steps = []
        while kept.sum() > 1:
            alive = np.flatnonzero(kept)
            groups = [(int(i),) for i in alive]
            if alive.size > 2:
                groups += [(int(a), int(b)) for n, a in enumerate(alive) for b in alive[n + 1:]]
            losses = subset_losses(K, net.m, kept, groups)
            best = int(np.argmin(losses))
            if losses[best] > loss + self.tol:
                break
            kept[list(groups[best])] = False
            steps.append({"removed": [net.labels[i] for i in groups[best]], "loss_before": loss,
                          "loss_after": float(losses[best])})
            loss = float(losses[best])
        return sorted(int(i) for i in np.flatnonzero(~kept)), {"steps": steps}


class Cluster(PruningRule):
    """Cluster students by direction, keep one per cluster (docs/maths.md §5).

    Students i, i' are linked when v̄_iᵀv̄_{i'} ≥ 1 − tol and |w̄_iᵀw̄_{i'}| ≥ 1 − tol; clusters are
    the connected components (single linkage). The expert sign is free, so a member counts +1 if
    its expert points like the cluster's first member and −1 otherwise; the cluster's output is
    ≈ (net count) · π He₃. Net 0: the whole cluster cancels and is removed. Otherwise one member of
    the majority sign is kept (the one closest to the others) and the rest removed; a net count
    other than ±1 changes the function and is flagged in ``details["changed_clusters"]``."""

    name = "cluster"

    def __init__(self, tol: float = 0.05):
        self.tol = _unit_interval(tol, "rule.tol")

    def params(self) -> dict:
        return {"tol": self.tol}

    def select(self, net):
        Gv, Gw = net.router_overlaps, net.expert_overlaps
        link = (Gv >= 1.0 - self.tol) & (np.abs(Gw) >= 1.0 - self.tol)
        comp = -np.ones(net.m, dtype=int)
        for start in range(net.m):
            if comp[start] >= 0:
                continue
            comp[start], stack = start, [start]
            while stack:
                i = stack.pop()
                for j in np.flatnonzero(link[i] & (comp < 0)):
                    comp[j] = start
                    stack.append(int(j))
        removed, clusters, changed = [], [], []
        for c in np.unique(comp):
            members = np.flatnonzero(comp == c)
            sign = np.where(Gw[members[0], members] >= 0, 1, -1)
            net_count = int(sign.sum())
            if net_count == 0:
                removed += members.tolist()
                keep = None
            else:
                major = members[sign == np.sign(net_count)]
                closeness = Gv[np.ix_(major, members)].sum(1) + np.abs(Gw[np.ix_(major, members)]).sum(1)
                keep = int(major[np.argmax(closeness)])
                removed += [int(i) for i in members if i != keep]
                if abs(net_count) != 1:
                    changed.append(net.labels[keep])
            if members.size > 1:
                clusters.append({"students": [net.labels[i] for i in members], "signs": sign.tolist(),
                                 "kept": None if keep is None else net.labels[keep]})
        if len(removed) == net.m:
            raise SpecError("rule", "the cluster rule would remove every student (all clusters cancel)")
        return sorted(removed), {"clusters": clusters, "changed_clusters": changed}


RULES = {rule.name: rule for rule in (Oracle, CancellingPairs, Greedy, Cluster)}


def make_rule(name: str, **params) -> PruningRule:
    """The rule called ``name`` with the given parameters (``None`` values mean the default)."""
    if name not in RULES:
        raise SpecError("rule", f"unknown pruning rule {name!r}; allowed: {sorted(RULES)}")
    klass = RULES[name]
    params = {k: v for k, v in params.items() if v is not None}
    allowed = set(klass.__init__.__code__.co_varnames[1:klass.__init__.__code__.co_argcount])
    for k in params:
        if k not in allowed:
            raise SpecError(f"rule.{k}", f"not a parameter of rule {name!r}; allowed: {sorted(allowed)}")
    return klass(**params)


@dataclass
class PruneResult:
    """What a rule did: removed/kept students (run numbering), the loss before and after."""

    rule: str
    params: dict
    removed: list
    kept: list
    loss_before: float
    loss_after: float
    network: Network
    details: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"rule": self.rule, "params": self.params, "removed": self.removed, "kept": self.kept,
                "loss_before": self.loss_before, "loss_after_prune": self.loss_after,
                "m_before": len(self.removed) + len(self.kept), "m_after": len(self.kept),
                "details": self.details}


def prune(net: Network, rule: PruningRule | str) -> PruneResult:
    """Apply ``rule`` to ``net``: the pruned network and the loss before and after."""
    if isinstance(rule, str):
        rule = make_rule(rule)
    positions, details = rule.select(net)
    pruned = net.remove(positions) if positions else net
    return PruneResult(rule.name, rule.params(), [net.labels[i] for i in positions], list(pruned.labels),
                       net.loss(), pruned.loss(), pruned, details)
