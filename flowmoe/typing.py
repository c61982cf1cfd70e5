"""Array shape aliases used in signatures (diffrax-style, with jaxtyping).

``N`` is the number of unit directions, ``N = 2m + 2m⋆``, ordered
``[v̄_1..v̄_m, w̄_1..w̄_m, v⋆_1..v⋆_m⋆, w⋆_1..w⋆_m⋆]``.
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
Scalar = Float[ArrayLike, ""]
