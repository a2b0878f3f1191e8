"""Sweeps: many experiments from one base config, one ordinary run folder per point.

- ``spec``: the sweep file's schema, ``--grid``/``--random`` parsing, and the expansion into
  points, every one of them built and validated before anything runs.
- ``records``: the sweep folder (``sweep.yaml``, ``points.csv``, ``points/<NNN>/``): writing,
  reading back, listing.
- ``figure``: ``sweep.png``, the metric against the swept values.
- ``local``: the local executor, points one after another in this process.
- ``result``: ``Sweep``, what ``aaf_cli.sweep`` returns.
- ``tuned``: the tuned-baseline protocol (``--tune``): selection, evaluation, ``tuned.csv``.
- ``command``: the ``aaf sweep`` command's options and progress lines.

(Named ``sweeps``: ``aaf_cli.sweep`` is the API's function.)
"""
