"""The data-flow analysis behind the rules, one job per module.

- :mod:`.values`: the abstract values (raw gradient, weight, duality-map output, ...) and the
  per-program-point state, with their join and combination.
- :mod:`.sites`: the update sites handed to the rules (no dependency on the analyzer, so the
  rules and the analyzer do not import each other).
- :mod:`.maps`: which expressions are duality maps (sign, division by a norm, SVD U·Vᵀ), norms,
  elementwise roots (Adam's √v) and what they make of a gradient.
- :mod:`.summaries`: what a function does to its arguments and returns, computed on demand.
- :mod:`.project`: finding a function imported from another file of the linted tree.
"""
