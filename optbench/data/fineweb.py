"""FineWeb language modelling: shard download, the task (loader + GPT + fixed evaluation), checks.

The data are the pre-tokenised GPT-2 shards of the NanoGPT speedrun (format: token_shards.py),
downloaded from the Hugging Face hub, or shards a user made with scripts/prepare_fineweb.py, or
the synthetic Markov shards of task=fineweb_synthetic (markov.py). All go through the same
reader and loader (token_loader.py).

Evaluation protocol (fixed by config, recorded in summary.json): the loss over the first
task.val_tokens tokens of the val shard, cut into sequences of task.seq_len, the same for every
optimizer, run outside the train clock. With task.select_tokens > 0 the next select_tokens tokens
of the val shard (after those) are scored too, as select_loss: `tune` chooses on them, so the
choice never sees the tokens the report scores.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf

from optbench.data.token_shards import MAX_VOCAB, find_shards, read_header
from optbench.errors import ConfigError

# --------------------------------------------------------------------------- download
# The speedrun's shards (100M GPT-2 tokens each; train shards are numbered from 1).
HUB_REPOS = {
    False: {"repo": "kjj0/fineweb10B-gpt2", "prefix": "fineweb", "train_shards": 103},
    True: {"repo": "kjj0/finewebedu10B-gpt2", "prefix": "finewebedu", "train_shards": 99},
}


def shard_names(shards: int, edu: bool = False) -> list[str]:
    """The val shard, then the first `shards` train shards."""
    spec = HUB_REPOS[edu]
    if not 1 <= shards <= spec["train_shards"]:
        raise ConfigError(
            f"--shards={shards} is invalid: the {spec['repo']} repository has train shards 1..{spec['train_shards']}"
        )
    p = spec["prefix"]
    return [f"{p}_val_000000.bin"] + [f"{p}_train_{i:06d}.bin" for i in range(1, shards + 1)]


def hub_file_info(repo: str, filenames: list[str]) -> dict[str, tuple[int, str | None]]:
    """{filename: (size in bytes, sha256 or None)} from the hub's metadata (LFS pointers)."""
    from huggingface_hub import HfApi

    out = {}
    for info in HfApi().get_paths_info(repo, filenames, repo_type="dataset"):
        lfs = getattr(info, "lfs", None)
        sha = getattr(lfs, "sha256", None) if lfs is not None else None
        out[info.path] = (int(getattr(lfs, "size", None) or info.size), sha)
    return out


def hub_download(repo: str, filename: str, root: Path) -> Path:
    """One file into root; huggingface_hub resumes an interrupted download of it."""
    from huggingface_hub import hf_hub_download

    return Path(hf_hub_download(repo_id=repo, filename=filename, repo_type="dataset", local_dir=str(root)))


def sha256_file(path: Path, chunk: int = 1 << 24) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _complete(path: Path, size: int, sha: str | None) -> bool:
    return path.is_file() and path.stat().st_size == size and (sha is None or sha256_file(path) == sha)


def download_fineweb(root, shards: int = 8, edu: bool = False) -> Path:
    """Download the val shard and the first `shards` train shards into `root`. Files already
    present with the hub's size and sha256 are kept (so a rerun resumes); every new file is
    checked against both and its header validated."""
    from optbench.extras import check

    check("huggingface_hub", "optbench data fineweb10B")
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    spec = HUB_REPOS[edu]
    names = shard_names(shards, edu)
    try:
        info = hub_file_info(spec["repo"], names)
    except Exception as e:  # network, auth, missing repo: one line for the user
        raise ConfigError(
            f"cannot read the file list of {spec['repo']} on the Hugging Face hub: "
            f"{str(e).splitlines()[0] if str(e) else type(e).__name__}"
        ) from None
    missing = [n for n in names if n not in info]
    if missing:
        raise ConfigError(f"{spec['repo']} has no file {missing[0]}")
    for name in names:
        size, sha = info[name]
        path = root / name
        if _complete(path, size, sha):
            print(f"{path}: present, size and checksum match")
            continue
        try:
            path = hub_download(spec["repo"], name, root)
        except Exception as e:
            raise ConfigError(
                f"downloading {name} from {spec['repo']} failed: "
                f"{str(e).splitlines()[0] if str(e) else type(e).__name__}"
            ) from None
        if not _complete(path, size, sha):
            got = path.stat().st_size if path.exists() else 0
            path.unlink(missing_ok=True)
            raise ConfigError(
                f"{path} does not match the hub's size {size} / sha256 {sha} "
                f"(got {got} bytes); removed it, run the command again"
            )
        n_tokens = read_header(path)
        print(f"{path}: {n_tokens:,} tokens")
    return root


# --------------------------------------------------------------------------- the task
def _shard_sources(cfg: DictConfig):
    """(directory, train pattern, val pattern, Markov source or None)."""
    d = cfg.data
    if d.get("synthetic"):
        from optbench.data.markov import TRAIN_PATTERN, VAL_PATTERN, ensure_markov_shards

        m = d.markov
        root, source = ensure_markov_shards(
            d.root,
            vocab_size=m.vocab_size,
            successors=m.successors,
            seed=m.seed,
            train_tokens=m.train_tokens,
            val_tokens=m.val_tokens,
            shard_tokens=m.shard_tokens,
        )
        return root, TRAIN_PATTERN, VAL_PATTERN, source
    return Path(d.root), d.train_pattern, d.val_pattern, None


@torch.no_grad()
def evaluate_language_model(
    model, inputs: torch.Tensor, targets: torch.Tensor, batch_size: int, rank: int = 0, world_size: int = 1
) -> float:
    """Mean next-token cross-entropy (nats) over all sequences; ranks split them, sums all-reduced."""
    from optbench.tasks.base import _dist_sum

    total = torch.zeros(2, device=inputs.device, dtype=torch.float64)
    share = torch.arange(rank, len(inputs), world_size, device=inputs.device)
    for start in range(0, len(share), batch_size):
        idx = share[start : start + batch_size]
        logits = model(inputs[idx]).float()
        total[0] += F.cross_entropy(logits.flatten(0, 1), targets[idx].flatten(), reduction="sum")
        total[1] += targets[idx].numel()
    total = _dist_sum(total)
    return (total[0] / total[1]).item()


def build_language_model_task(cfg: DictConfig, device: torch.device, rank: int, world_size: int):
    from optbench.data.token_loader import TokenLoader, selection_tokens, validation_tokens
    from optbench.models import build_model
    from optbench.tasks.base import Task

    task, t = cfg.task, cfg.trainer
    seq_len, val_tokens = int(task.seq_len), int(task.val_tokens)
    root, train_pattern, val_pattern, source = _shard_sources(cfg)
    train_shards = find_shards(root, train_pattern)
    val_shard = find_shards(root, val_pattern)[0]
    loader = TokenLoader(
        train_shards,
        t.batch_size,
        seq_len,
        t.grad_accum,
        rank,
        world_size,
        device,
        order=cfg.data.get("order", "interleaved"),
    )

    val = validation_tokens(val_shard, val_tokens, seq_len)
    val_t = torch.from_numpy(val).to(device)
    val_inputs, val_targets = val_t[:-1].view(-1, seq_len), val_t[1:].view(-1, seq_len)
    select_n = int(task.get("select_tokens") or 0)
    if select_n:
        sel_t = torch.from_numpy(selection_tokens(val_shard, val_tokens, select_n, seq_len)).to(device)
        sel_inputs, sel_targets = sel_t[:-1].view(-1, seq_len), sel_t[1:].view(-1, seq_len)

    model_cfg = OmegaConf.to_container(cfg.model, resolve=True)
    model_cfg.setdefault("max_seq_len", seq_len)
    model = build_model(model_cfg)
    eval_batch = int(task.get("eval_batch_size", 32))

    from optbench.tasks.base import loss_reduction

    reduction = loss_reduction(cfg)  # sum: the modded-nanogpt benchmark's loss, summed over tokens

    def loss(model, batch) -> torch.Tensor:
        x, y = batch
        return F.cross_entropy(model(x).float().flatten(0, 1), y.flatten(), reduction=reduction)

    floor = source.entropy_rate() if source is not None else None

    def evaluate(model) -> dict:
        value = evaluate_language_model(model, val_inputs, val_targets, eval_batch, rank, world_size)
        out = {"val_loss": value}
        if floor is not None:
            out["excess_loss"] = value - floor
        if select_n:  # the held-out slice `tune` chooses on; val_loss stays the reported metric
            out["select_loss"] = evaluate_language_model(model, sel_inputs, sel_targets, eval_batch, rank, world_size)
        return out

    extra = {
        "seq_len": seq_len,
        "val_tokens": val_tokens,
        "val_shard": val_shard.name,
        "train_shards": len(train_shards),
        "train_tokens_available": int(sum(loader.lengths)),
        "tokens_per_step": t.batch_size * seq_len,
    }
    if select_n:  # [start, stop) token offsets in the val shard, beside the val set's [0, val_tokens + 1)
        extra["select_tokens"] = select_n
        extra["select_slice"] = [val_tokens + 1, val_tokens + 2 + select_n]
    if source is not None:
        extra.update(
            {
                "entropy_floor": floor,
                # the true model's loss on these very tokens: the floor up to sampling noise
                "val_floor_empirical": source.nll(val),
                "markov": OmegaConf.to_container(cfg.data.markov, resolve=True),
            }
        )
    flops = model.flops_per_token(seq_len) if hasattr(model, "flops_per_token") else None
    if flops:
        extra["flops_per_token"] = flops
    return Task(
        name=task.name,
        model=model,
        train_batches=loader,
        loss=loss,
        evaluate=evaluate,
        metric=task.metric,
        mode=task.mode,
        target=task.target,
        samples_per_step=t.batch_size,
        tokens_per_step=t.batch_size * seq_len,
        state_dict=loader.state_dict,
        load_state_dict=loader.load_state_dict,
        summary_extra=extra,
        flops_per_token=flops,
        loss_reduction=reduction,
    )


# --------------------------------------------------------------------------- validation
def _whole(cfg, key: str, minimum: int = 1):
    value = OmegaConf.select(cfg, key)
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ConfigError(f"{key}={value!r} is invalid: must be a whole number >= {minimum}")
    return value


# the entropy rate costs a V x V eigendecomposition (~2 s at 1024): checked at config time up to this vocabulary
MAX_VOCAB_FLOOR_CHECKED = 256


def _target_above_floor(cfg: DictConfig, vocab: int, successors: int) -> None:
    """A loss target below the Markov source's entropy rate can never be reached: no model's expected
    loss is below it (only sampling noise on a finite val set could dip under it)."""
    target, metric = cfg.task.get("target"), str(cfg.task.get("metric") or "")
    if (
        target is None
        or not metric.endswith("loss")
        or cfg.task.get("mode") != "min"
        or vocab > MAX_VOCAB_FLOOR_CHECKED
    ):
        return
    from optbench.data.markov import MarkovSource

    floor = MarkovSource.random(vocab, successors, int(cfg.data.markov.seed)).entropy_rate()
    if target < floor:
        raise ConfigError(
            f"task.target={target} is invalid: below the synthetic source's entropy floor "
            f"{floor:.4f} nats ({metric} cannot go under it); choose a target >= {floor:.4f}"
        )


def validate_language_model_config(cfg: DictConfig) -> None:
    from optbench.models.gpt import MLPS, NORMS, POSITIONS

    d, m = cfg.data, cfg.model
    seq_len = _whole(cfg, "task.seq_len")
    val_tokens = _whole(cfg, "task.val_tokens")
    if val_tokens % seq_len:
        raise ConfigError(
            f"task.val_tokens={val_tokens} is invalid: must be a multiple of "
            f"task.seq_len={seq_len} (e.g. {max(1, val_tokens // seq_len) * seq_len})"
        )
    _whole(cfg, "task.eval_batch_size")
    select_tokens = _whole(cfg, "task.select_tokens", 0) if cfg.task.get("select_tokens") is not None else 0
    if select_tokens % seq_len:
        raise ConfigError(
            f"task.select_tokens={select_tokens} is invalid: must be a multiple of "
            f"task.seq_len={seq_len} (e.g. {max(1, select_tokens // seq_len) * seq_len})"
        )
    from optbench.data.token_loader import ORDERS

    if d.get("order", "interleaved") not in ORDERS:
        raise ConfigError(f"data.order={d.get('order')!r} is invalid; valid choices: {', '.join(ORDERS)}")
    if m.get("name") == "gpt":
        for key, valid in (("positions", POSITIONS), ("norm", NORMS), ("mlp", MLPS)):
            if m.get(key) is not None and m.get(key) not in valid:
                raise ConfigError(f"model.{key}={m.get(key)!r} is invalid; valid choices: {', '.join(valid)}")
        if m.get("positions") == "learned" and m.get("max_seq_len") and m.max_seq_len < seq_len:
            raise ConfigError(f"model.max_seq_len={m.max_seq_len} is shorter than task.seq_len={seq_len}")
    if d.get("synthetic"):
        vocab = _whole(cfg, "data.markov.vocab_size", 2)
        if vocab > MAX_VOCAB:
            raise ConfigError(f"data.markov.vocab_size={vocab} is invalid: must be <= {MAX_VOCAB} (uint16 tokens)")
        succ = _whole(cfg, "data.markov.successors", 2)
        if succ > vocab:
            raise ConfigError(f"data.markov.successors={succ} is invalid: must be in [2, vocab_size={vocab}]")
        for key in ("train_tokens", "val_tokens", "shard_tokens"):
            _whole(cfg, f"data.markov.{key}")
        if select_tokens and d.markov.val_tokens >= val_tokens + 1 > d.markov.val_tokens - select_tokens - 1:
            raise ConfigError(
                f"task.select_tokens={select_tokens} is more than the synthetic val shard holds "
                f"after task.val_tokens={val_tokens} (data.markov.val_tokens={d.markov.val_tokens}; "
                f"need val_tokens + select_tokens + 2)"
            )
        if d.markov.val_tokens < val_tokens + 1:
            raise ConfigError(
                f"task.val_tokens={val_tokens} is more than the synthetic val shard holds "
                f"(data.markov.val_tokens={d.markov.val_tokens}; need val_tokens + 1)"
            )
        _target_above_floor(cfg, vocab, succ)
    else:
        vocab = _whole(cfg, "data.vocab_size", 2)
        if not Path(d.root).exists():
            raise ConfigError(
                f"data.root={d.root!r} does not exist; run `optbench data fineweb10B --root "
                f"{d.root}` first (or pass data.root=DIR where the token shards are)"
            )
    if m.get("vocab_size") is not None and m.vocab_size < vocab:
        raise ConfigError(f"model.vocab_size={m.vocab_size} is smaller than the data's vocabulary ({vocab})")
