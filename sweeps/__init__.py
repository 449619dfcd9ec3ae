"""Sweeps over the pipeline scripts: every point of a hyperparameter range or a set of training-data variants
runs train.py -> infer.py -> evaluate.py, and the results become the paper's tables and figure.

- `plan.py`: the sweep definition (`SweepArguments`), its points, and the steps of each point;
- `runner.py`: runs the unfinished points, each script with its argument objects, or one point alone (`--point`);
- `cluster.py`: the points as jobs of a SLURM cluster (or of this machine) through submitit (`--submit`);
- `report.py`: results.json, table.md and figure.png from the finished points, wherever they ran.

The entry point is `sweep.py` in the repository root, beside the scripts it runs.
"""
