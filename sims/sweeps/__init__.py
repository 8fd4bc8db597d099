"""``pgverify sweep``: a grid of cells, each a pure function of its config, run on a pool or Ray.

A sweep spec (TOML, ``sims.sweeps.spec``) names the grid: objectives with their config fields,
advantage estimators, aggregation, policy family and size, divergence, group size, replicas,
seeds and the quantities to measure. ``sims.sweeps.cells`` expands it into cells and computes one
cell (its random streams come from hashes of its config, never from the order cells run in);
``sims.sweeps.executor`` runs cells on a local process pool or a Ray cluster behind one seam;
``sims.sweeps.store`` keeps each finished cell on disk under its content hash, so a killed sweep
resumes; ``sims.sweeps.tables`` writes the tidy table (Parquet and CSV), the summary, the figures
and the provenance. ``sims.sweeps.cli`` is the command.

This package's ``__init__`` imports nothing: ``pgverify --help`` stays fast.
"""
