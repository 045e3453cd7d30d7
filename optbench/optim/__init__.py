"""Optimizers by the names users know: registry, parameter-group policies, our own few."""

from optbench.optim import catalog  # noqa: F401,E402  (fills OPTIMIZERS)
from optbench.optim.groups import ROLES, build_param_groups, param_roles  # noqa: F401
from optbench.optim.registry import (  # noqa: F401
    OPTIMIZERS,
    OptimizerSpec,
    build_optimizer,
    build_optimizer_from_config,
    optimizer_defaults,
    validate_optimizer_config,
)
