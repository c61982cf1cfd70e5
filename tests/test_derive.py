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
    assert all(name.endswith("-he1.md") for name in docs)
    assert "He_" in docs["pair-kernel-he1.md"] or "z" in docs["pair-kernel-he1.md"]
