"""Notation and array aliases (jaxtyping), used in every shape annotation of the package.

Dimension letters:
  b  batch            t  frames (time)       f  features (frequency bins or Mel bands)
  z  latent size      h  recurrent state      g  SRNN backward state
  o  decoder output (f, or 2f with a learned Gaussian variance)   n  generated sequences
  p  prime frames (or a first layer's width, where the docstring says so)
Inside models arrays are time-major (t, b, ...) because ``scan`` runs over the leading axis;
the public API takes and returns batch-major (b, t, ...) arrays. Annotations are documentation
(strings under ``from __future__ import annotations``): they are not checked at run time.
"""

from __future__ import annotations

from typing import Any

import jax
from jaxtyping import Array, Bool, Float, Int  # noqa: F401  (re-exported for annotations)

PRNGKey = jax.Array
Params = Any  # a Flax variables pytree {'params': ...}
Metrics = dict[str, Array]
