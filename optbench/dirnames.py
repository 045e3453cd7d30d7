"""Run-directory names a file system accepts.

A sweep's job directory is named after its overrides (Hydra's `override_dirname`), and a long command
line (the small CPU form of a preset carries ten overrides) gives a name past the 255-byte limit of
Linux file systems: the job then dies with `OSError: File name too long`. `${ob_dirname:...}` keeps a
short name as it is and cuts a long one, ending it with a hash of the whole so two sweeps' jobs never
share a directory. Registered when optbench is imported (the CLI, a SLURM job unpickling its task).
"""

from __future__ import annotations

import hashlib

MAX_NAME = 200  # bytes; under the 255 of ext4/xfs/NFS, leaving room for the job number prefix


def short_dirname(name: str, limit: int = MAX_NAME) -> str:
    raw = str(name)
    if len(raw.encode()) <= limit:
        return raw
    digest = hashlib.sha1(raw.encode()).hexdigest()[:10]
    cut = raw.encode()[: limit - len(digest) - 1].decode(errors="ignore")
    return f"{cut}~{digest}"


def unique_tag() -> str:
    """`${ob_uid:}`: 6 random hex digits ending the default run and sweep directory names, since the
    time alone (to the second) gives two runs started together one directory. Cached per config like
    Hydra's ${now:...}, so every mention in one config is the same tag."""
    import secrets

    return secrets.token_hex(3)


def register() -> None:
    from omegaconf import OmegaConf

    if not OmegaConf.has_resolver("ob_dirname"):
        OmegaConf.register_new_resolver("ob_dirname", short_dirname)
    if not OmegaConf.has_resolver("ob_uid"):
        OmegaConf.register_new_resolver("ob_uid", unique_tag, use_cache=True)
