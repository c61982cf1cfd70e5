"""The names the command line offers as choices, in one module free of numerical imports.

``flowmoe --help`` and every ``flowmoe COMMAND --help`` build their parsers from these without
importing JAX, sympy or matplotlib; the modules that implement the choices import them from here,
so there is one list of each.
"""

from __future__ import annotations

# flowmoe.simulate: finite-step training in R^d
METHODS = ("population-gd", "online-sgd", "gd", "minibatch-sgd")
USES_BATCH = ("online-sgd", "minibatch-sgd")
USES_SAMPLES = ("gd", "minibatch-sgd")

# flowmoe.compare: deviation measures of a simulation from the ODE
METRICS = ("alignment", "matched", "loss_rel", "loss_abs", "gram")

# rules matching students to teachers (flowmoe.observables.match_pairs; phases, plot loss, verify)
MATCHINGS = ("final", "initial", "escape-time", "hungarian")

# flowmoe.portrait.reduction
OVERLAPS = ("alpha", "beta", "mu", "nu", "rho")
REDUCTIONS = ("pair", "symmetric", "slice")
SLICE_NAMES_HELP = ("alpha[i,j] = ⟨v̄_i, v⋆_j⟩, beta[i,j] = ⟨w̄_i, w⋆_j⟩, mu[i,j] = ⟨v̄_i, w⋆_j⟩, "
                    "nu[i,j] = ⟨w̄_i, v⋆_j⟩, rho[i] = ⟨v̄_i, w̄_i⟩, vv[i,k], ww[i,k], vw[i,k] = ⟨v̄_i, w̄_k⟩, "
                    "G[p,q] (a Gram entry); bare alpha, beta, mu, nu, rho mean index 0")

# flowmoe.rates.presets (the keys of PRESETS, in its order)
RATE_PRESETS = ("deepseek-thm1", "deepseek-thm2", "deepseek-thm3", "deepseek-thm4", "softmax-exact-k2")
