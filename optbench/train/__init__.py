"""The one training loop and what it writes."""
from optbench.train.loop import train  # noqa: F401
