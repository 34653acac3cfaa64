"""Automated interpretability (Bills et al., 2023; EleutherAI delphi): explain, simulate, score.

Data flow, one module per arrow::

    token windows --units--> activations [n_windows, pos, n_units]
                  --records--> top / random / quantile records (train for explaining, test for scoring)
                  --explainers--> one-sentence explanation (local LLM, HTTP LLM, or token statistics)
                  --simulator--> predicted activations per token ("all at once", local LM or server)
                  --scoring--> correlation, detection, fuzzing, embedding scores
                  --results--> JSON Lines

``backends`` holds the OpenAI-compatible HTTP client used by the HTTP explainer and by ``remote``
(the all-at-once simulator over the completions API, detection and fuzzing over chat), ``localmodel`` the
local LM, ``llamacpp`` starts llama.cpp's OpenAI-compatible server on 127.0.0.1 (the tests and the
benchmark use a real one), ``pipeline`` the explain-and-score loop, ``plots`` the figures, ``notebook``
notebook 04's parameter checks, sizes, printed summaries, report prose and metrics. SAE latents come from the
course's default SAE (:mod:`course_lib.sae.default`).
"""
