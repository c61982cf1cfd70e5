"""The committed derivation documents are exactly what `flowmoe derive` writes."""

from pathlib import Path

from flowmoe.derive import render_all

ROOT = Path(__file__).resolve().parents[1]


def test_committed_derivations_are_regenerated_exactly():
    rendered = render_all("he3")
    assert set(rendered) == {"pair-kernel.md", "self-term.md", "student-teacher.md", "reduced-ode.md"}
    for name, text in rendered.items():
        committed = (ROOT / "derivations" / name).read_text()
        assert committed == text, f"derivations/{name} is stale: run `flowmoe derive --out derivations`"


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
