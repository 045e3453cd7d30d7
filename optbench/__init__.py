"""optbench: fair, fast benchmarking of deep-learning optimizers."""
from pathlib import Path

__version__ = "0.1.0"

# conf/ sits beside the package (editable install, as the Makefile does it).
CONF_DIR = Path(__file__).resolve().parent.parent / "conf"


def _register_resolvers() -> None:
    try:
        from optbench.dirnames import register
    except ImportError:  # omegaconf missing: nothing that composes a config can run anyway
        return
    register()


_register_resolvers()
