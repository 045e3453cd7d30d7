"""optbench: fair, fast benchmarking of deep-learning optimizers."""

from pathlib import Path

__version__ = "0.1.0"

# conf/ ships inside the package (package data), so a wheel installed anywhere composes configs.
PACKAGE_DIR = Path(__file__).resolve().parent
CONF_DIR = PACKAGE_DIR / "conf"


def _register_resolvers() -> None:
    """What composing conf/ needs before Hydra reads it: our resolvers and the trainer schema
    (trainer/default.yaml's defaults list names it in Hydra's ConfigStore)."""
    try:
        from optbench.dirnames import register
        from optbench.schema import register as register_schemas
    except ImportError:  # omegaconf missing: nothing that composes a config can run anyway
        return
    register()
    register_schemas()


_register_resolvers()
