"""The personalization methods, one folder per method, each holding its domain code and its stage(s):
``memory`` (recall, remember), ``align`` (P-Aligner pre-alignment), ``rps`` (sample), ``profiles``
(candidates, rerank, the latent preference profiles), and ``system_prompt``. A method imports the
pipeline's contract and ports, never another method."""
