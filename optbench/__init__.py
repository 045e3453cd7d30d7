"""optbench: fair, fast benchmarking of deep-learning optimizers."""
from pathlib import Path

__version__ = "0.1.0"

# conf/ ships inside the package (package data), so a wheel installed anywhere composes configs.
PACKAGE_DIR = Path(__file__).resolve().parent
CONF_DIR = PACKAGE_DIR / "conf"


def _register_resolvers() -> None:
    try:
        from optbench.dirnames import register
    except ImportError:  # omegaconf missing: nothing that composes a config can run anyway
        return
    register()


_register_resolvers()
