"""The evidence benchmarks' engine: one loop for every modality (``benchmarks/ic_unlearning.py``,
``benchmarks/ddpm_digits.py``, ``benchmarks/llm_tofu.py --size evidence`` and ``ImageClassification/demo.py``).

* :mod:`~benchmarks.evidence.design`: grids, search, gaps over seeds, sensitivity (pure functions);
* :mod:`~benchmarks.evidence.engine`: :func:`~benchmarks.evidence.engine.run`, the loop, and the scripts'
  command line;
* :mod:`~benchmarks.evidence.report`: tables, reading and plots of a results record;
* one module per modality (:mod:`~benchmarks.evidence.ic`, :mod:`~benchmarks.evidence.ddpm`,
  :mod:`~benchmarks.evidence.tofu`): its presets, method table, reference runs, unlearning call and gap.

It lives with the benchmarks, not in the runtime ``common/``: no entry script, no module a user imports to
unlearn, and no test of the runtime depends on it (the runs it makes are the entry scripts' ``main``).
"""
