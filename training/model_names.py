"""The model names of the benchmark (DESIGN §2, §10), importable without torch: the CLI's
``--help`` and argument checks use them before any model is built."""

from __future__ import annotations

MODELS = (
    "mostpop", "userpop", "cooccur", "youtube_plain", "youtube", "utpm", "sve", "sve_pkm",
    "ctmvm",
)  # fmt: skip
COUNTING = ("mostpop", "userpop", "cooccur")
LEARNED = ("youtube_plain", "youtube", "utpm", "sve", "sve_pkm", "ctmvm")
USES_SVE = ("sve", "sve_pkm", "ctmvm")
