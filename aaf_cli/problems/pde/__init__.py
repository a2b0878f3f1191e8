"""Physics-informed problems (PINNs): the ``pde:`` section, its problems, losses and references.

* ``spec``: the config section (``PdeConfig``), importable without torch;
* ``problem``: compiles a section into points and values in float64 (``build_problem``);
* ``residual``: per-model derivatives of a batched ensemble and the PINN loss (``PinnLoss``);
* ``reference``: reference solutions without a closed form (``burgers``);
* ``training``: the runtime side of the problem protocol (``PinnProblem``: the compiled
  problem as a run's data, the PINN loss as its objective, its terms, summary and figures).

``PdeProblem`` (``problem``) is a section compiled into tensors; ``PinnProblem`` (``training``)
is what a run asks about it.

Only ``spec`` is imported here, so that loading a config stays light.
"""

from aaf_cli.problems.pde.spec import PdeConfig, check_inputs, parse_pde

__all__ = ["PdeConfig", "check_inputs", "parse_pde"]
