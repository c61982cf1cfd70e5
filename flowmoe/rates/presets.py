"""The rate experiments shipped with flowmoe.

``deepseek-thm1`` … ``deepseek-thm4``: the four synthetic experiments of "On DeepSeekMoE: Statistical
Benefits of Shared Experts and Normalized Sigmoid Gating" (arXiv 2505.10860, App. G.1): d = 1,
X ~ Uniform[−3, 3], truth with k₁⋆ = 1 shared and k₂⋆ = 2 routed experts, fitted with k₁ = 2, k₂ = 3.
``softmax-exact-k2``: the exactly specified softmax-gated Gaussian MoE of "Demystifying Softmax Gating
in Gaussian Mixture of Experts" (arXiv 2305.03288): no shared part, X = linspace(0, 1, n), k = k⋆ = 2,
fits started at the truth.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ..errors import SpecError
from .models import GaussianMoE


@dataclasses.dataclass(frozen=True)
class RatePreset:
    name: str
    description: str
    truth_model: GaussianMoE
    fit_model: GaussianMoE
    truth: dict
    loss: str
    n_values: tuple
    reps: int = 40
    design: str = "uniform"
    x_low: float = -3.0
    x_high: float = 3.0
    init_scale: float = 0.1
    method: str = "direct"
    note: str = ""

    def truth_arrays(self) -> dict:
        return {k: np.asarray(v, dtype=np.float64) for k, v in self.truth.items()}

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["truth_model"] = dataclasses.asdict(self.truth_model)
        d["fit_model"] = dataclasses.asdict(self.fit_model)
        return d


_DEEPSEEK_N = tuple(int(round(v)) for v in np.geomspace(100, 100_000, 10))
_SHIFT_NOTE = ("With β⋆₁₁ = β⋆₁₂ = 5 the softmax gate does not depend on x: softmax ignores a common shift, "
               "so the routed weights are 0.268941 and 0.731059 for every x. The values are kept as given.")

_THM1_TRUTH = dict(omega=[1.0], kappa=[[6.0, 0.0, -8.0]], tau=[0.25], beta1=[[5.0], [5.0]], beta0=[-0.5, 0.5],
                   eta=[[-12.0, 4.0], [12.0, 4.0]], nu=[0.4, 0.4])
_THM2_TRUTH = dict(omega=[1.0], kappa=[[2.0, 0.0]], tau=[0.2], beta1=[[5.0], [5.0]], beta0=[-0.5, 0.5],
                   eta=[[8.0, 2.0], [-6.0, 1.0]], nu=[0.4, 0.4])
_THM4_TRUTH = dict(omega=[1.0], kappa=[[6.0, 0.0, -8.0]], tau=[0.25], beta1=[[5.0], [5.0]], beta0=[-0.5, 0.5],
                   eta=[[8.0, 2.0], [-6.0, 1.0]], nu=[0.4, 0.4])


def _deepseek(name, gate, shared, routed, truth, loss, description, note=""):
    tm = GaussianMoE(gate, routed, shared, 1, 2)
    return RatePreset(name=name, description=description, truth_model=tm, fit_model=tm.with_atoms(2, 3),
                      truth=truth, loss=loss, n_values=_DEEPSEEK_N, note=note)


PRESETS = {
    p.name: p for p in [
        _deepseek("deepseek-thm1", "softmax", "relu", "relu0", _THM1_TRUTH, "D1",
                  "softmax gate; shared κ₂ReLU(κ₁x + κ₀), routed η₂ReLU(η₁x); loss D₁ (Theorem 1)", _SHIFT_NOTE),
        _deepseek("deepseek-thm2", "softmax", "linear", "linear", _THM2_TRUTH, "D2",
                  "softmax gate; linear shared and routed experts; loss D₂ (Theorem 2)", _SHIFT_NOTE),
        _deepseek("deepseek-thm3", "nsigmoid", "relu", "relu0", {**_THM1_TRUTH, "beta1": [[0.0], [0.0]]}, "D3",
                  "normalised sigmoid, sparse regime (β⋆₁ = 0); experts as thm1; loss D₃ (Theorem 3)",
                  "With β⋆₁ = 0 the true gate does not depend on x; normalised-sigmoid masses σ(β₀) are then "
                  "identified only up to a common factor."),
        _deepseek("deepseek-thm4", "nsigmoid", "relu", "linear", _THM4_TRUTH, "D4",
                  "normalised sigmoid, dense regime; shared ReLU FFN, routed linear; loss D₄ against the KL "
                  "projection Ǧ₂ (Theorem 4)"),
        RatePreset(
            name="softmax-exact-k2",
            description="softmax-gated Gaussian MoE, logits (−8 + 25x, 0), experts 15 − 20x and −5 + 20x, "
                        "variances 0.09 and 0.16; exactly specified (k = k⋆ = 2); loss D₁",
            truth_model=GaussianMoE("softmax", "linear", "linear", 0, 2),
            fit_model=GaussianMoE("softmax", "linear", "linear", 0, 2),
            truth=dict(beta1=[[25.0], [0.0]], beta0=[-8.0, 0.0], eta=[[-20.0, 15.0], [20.0, -5.0]], nu=[0.09, 0.16]),
            loss="D1",
            n_values=tuple(int(v) for v in np.concatenate([np.linspace(100, 900, 5), np.linspace(1000, 100_000, 195)])),
            design="grid", x_low=0.0, x_high=1.0, init_scale=0.0,
            note="Fits start at the truth (as the paper's EM); X = linspace(0, 1, n) for every data set."),
    ]
}


def get_preset(name: str) -> RatePreset:
    if name not in PRESETS:
        raise SpecError("--preset", f"unknown rate preset {name!r}; allowed: {', '.join(PRESETS)}")
    return PRESETS[name]


__all__ = ["RatePreset", "PRESETS", "get_preset"]
