"""The committed derivation documents are what `flowmoe derive` writes, compared by value.

Every printed expression is compared as a sympy expression (parsed back from the sidecar
``derivations/expressions.json``) against a fresh derivation, and the prose outside the math is
compared as text: a new version of sympy's LaTeX printer does not fail the check, a changed
formula or a stale document does.
"""

import re
from pathlib import Path

import sympy as sp

from flowmoe.derive import derive_expressions, read_expressions, render_all

ROOT = Path(__file__).resolve().parents[1]
_MATH = re.compile(r"\$\$.*?\$\$|\$[^$]*\$", re.S)


def _prose(text: str) -> str:
    return _MATH.sub("<math>", text)


def _same(a, b) -> bool:
    """Equal as expressions; numbers printed to 6 significant digits compare to 1e-12."""
    diff = sp.expand(a - b)
    if diff == 0:
        return True
    if not diff.free_symbols:
        return abs(float(diff)) < 1e-12
    try:
        coeffs = sp.Poly(diff, *sorted(diff.free_symbols, key=str)).coeffs()
    except sp.PolynomialError:  # a symbolic difference (e.g. in the R_{p,q}): not a rounding one
        return False
    return all(c.is_number and abs(float(c)) < 1e-12 for c in coeffs)


def _stale(committed: dict, fresh: dict) -> list[str]:
    bad = [f"{doc}: missing or extra expressions" for doc in fresh if set(committed.get(doc, {})) != set(fresh[doc])]
    bad += [f"{doc}: {label}" for doc in fresh for label in fresh[doc]
            if label in committed.get(doc, {}) and not _same(committed[doc][label], fresh[doc][label])]
    return bad + [f"{doc}: not derived any more" for doc in committed if doc not in fresh]


def test_committed_derivations_match_a_fresh_derivation():
    rendered = render_all("he3")
    assert set(rendered) == {"pair-kernel.md", "self-term.md", "student-teacher.md", "reduced-ode.md"}
    fresh = derive_expressions("he3")
    committed = read_expressions(ROOT / "derivations" / "expressions.json")
    assert not _stale(committed, fresh), "stale derivations: run `flowmoe derive --out derivations`"
    for name, text in rendered.items():
        doc = (ROOT / "derivations" / name).read_text()
        assert _prose(doc) == _prose(text), f"derivations/{name} is stale: run `flowmoe derive --out derivations`"


def test_the_comparison_catches_a_changed_formula():
    fresh = derive_expressions("he3")
    committed = read_expressions(ROOT / "derivations" / "expressions.json")
    changed = {doc: dict(exprs) for doc, exprs in committed.items()}
    beta = next(s for s in changed["reduced-ode.md"]["dbeta/dt leading"].free_symbols if s.name == "beta")
    changed["reduced-ode.md"]["dbeta/dt leading"] += beta**3 / 10**6
    assert _stale(changed, fresh) == ["reduced-ode.md: dbeta/dt leading"]
    changed["self-term.md"]["K_ii sigmoid"] *= 1 + 1e-6  # a printed number off in the 6th digit
    assert "self-term.md: K_ii sigmoid" in _stale(changed, fresh)
    assert _prose("a $x^2$ b $$y$$ c") == "a <math> b <math> c"


def test_documents_state_their_command():
    for name, text in render_all("he3").items():
        assert "flowmoe derive" in text.splitlines()[2], name


def test_other_experts_render():
    docs = render_all("he1")
    assert set(docs) == {"pair-kernel-he1.md", "self-term-he1.md", "student-teacher-he1.md", "reduced-ode-he1.md"}
    assert "(2 terms)" not in docs["pair-kernel-he1.md"] and "(5 terms)" in docs["pair-kernel-he1.md"]


def test_numbers_in_the_self_term_document_match_quadrature():
    """He₁ self term: K_ii(ρ) = E[π(s)² (ρs + √(1−ρ²)z)²] = E[π²] + ρ²(E[π²s²] − E[π²]); the
    document's coefficients (6 significant digits) against a 1-D Gauss–Hermite rule."""
    import re

    import numpy as np
    from scipy.special import expit

    x, w = np.polynomial.hermite.hermgauss(200)
    s, w = np.sqrt(2) * x, w / np.sqrt(np.pi)
    e_pi2 = w @ expit(s) ** 2
    e_pi2_s2 = w @ (expit(s) ** 2 * s**2)
    text = render_all("he1")["self-term-he1.md"]
    approx = text.split("\\approx", 1)[1].split("$$", 1)[0].strip().rstrip(".")
    c2 = float(re.search(r"([0-9.]+(?:e-?[0-9]+)?) \\rho\^\{2\}", approx).group(1))
    c0 = float(re.search(r"\+ ([0-9.]+(?:e-?[0-9]+)?)$", approx).group(1))
    coef = {0: c0, 2: c2}
    assert abs(coef[0] - e_pi2) < 1e-5 and abs(coef[2] - (e_pi2_s2 - e_pi2)) < 1e-5, (coef, e_pi2, e_pi2_s2)
