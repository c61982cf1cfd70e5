"""Array shape aliases used in signatures (diffrax-style, with jaxtyping).

``N`` is the number of unit directions (``N = 2m + 2m⋆`` without shared experts), in the block
order of :class:`flowmoe.layout.Layout`; ``T`` the number of saved times; ``d`` the input
dimension. With ``jaxtyping``'s import hook (``jaxtyping.install_import_hook("flowmoe",
"beartype.beartype")``) the annotated signatures are checked at run time.
"""

from __future__ import annotations

from typing import Union

import jax
import numpy as np
from jaxtyping import Float

ArrayLike = Union[jax.Array, np.ndarray]
Gram = Float[ArrayLike, "N N"]
Norms = Float[ArrayLike, " N"]
GramPath = Float[ArrayLike, "T N N"]
Vectors = Float[ArrayLike, "k d"]
Times = Float[ArrayLike, " T"]
Factor = Float[ArrayLike, "N k"]
Scalar = Float[ArrayLike, ""]
