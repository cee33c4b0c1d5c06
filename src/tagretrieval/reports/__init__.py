"""Reports on finished runs: per-run tables and figures, comparisons over seeds, word-vector neighbours.

- :mod:`tagretrieval.reports.run_report`: ``DIR/reports/`` of one run (``python main.py mode=report run_dir=DIR``);
  :mod:`tagretrieval.reports.scores` caches the score matrix it needs.
- :mod:`tagretrieval.reports.compare`: mean and 95% CI over seeds, grouped by config keys (paper Tables 1-2),
  ``python -m tagretrieval.reports.compare DIR [DIR ...] --by model sampler --out table``.
- :mod:`tagretrieval.reports.neighbours`: nearest words and nearest tags (paper Table 3),
  ``python -m tagretrieval.reports.neighbours --tags ... --word-vectors ... --checkpoint ...``.

Nothing is imported here: each command loads only what it needs (matplotlib and Lightning take seconds), and
``python -m`` runs its module without a double import.
"""
