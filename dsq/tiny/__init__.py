"""The embedded tiny DeepSeek-V3-architecture model that ``dsq demo`` and ``dsq eval`` use.

Modules: :mod:`~dsq.tiny.data` (training / held-out text from CPython's Lib, PSF licence, and its builder),
:mod:`~dsq.tiny.tokenizer` (UTF-8 bytes as tokens), :mod:`~dsq.tiny.model` (config, loading, expert-load
counting), :mod:`~dsq.tiny.train` (the CPU training script), :mod:`~dsq.tiny.evaluate` (perplexity, unigram
baseline), :mod:`~dsq.tiny.demo` and :mod:`~dsq.tiny.report` (``dsq demo``). Weights: ``model/``.
Model card: docs/tiny-deepseek.md.
"""
