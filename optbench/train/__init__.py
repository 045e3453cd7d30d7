"""The one training loop and what it writes."""


def __getattr__(name: str):
    # lazily: `optbench train --help` and the other verbs that import optbench.train.* must not pay
    # for importing torch (the loop) before they need it
    if name == "train":
        from optbench.train.loop import train

        return train
    raise AttributeError(f"module 'optbench.train' has no attribute {name!r}")
