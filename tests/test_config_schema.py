"""Base yamls (optimizer/_base.yaml, scheduler/_base.yaml) and the structured-config schemas
(optbench/schema.py): what every optimizer and schedule shares comes from one file, a value of the
wrong type is one line naming the key, and Hydra's errors are read by type, not by their text."""

from __future__ import annotations

import dataclasses

import pytest
from omegaconf import OmegaConf

from optbench import CONF_DIR
from optbench.confdir import group_options, load_option
from optbench.config import compose, validate
from optbench.errors import ConfigError
from optbench.schema import TrainerSchema

# transcribed from the yamls as they were before the bases (each of the 40 optimizer yamls and 13
# scheduler yamls listed these lines): the composed configs must still have them
ROLE_POLICY = {
    "matrix": {"lr_mult": 1.0, "weight_decay": True},
    "embedding": {"lr_mult": 1.0, "weight_decay": True},
    "head": {"lr_mult": 1.0, "weight_decay": True},
    "scalar": {"lr_mult": 1.0, "weight_decay": False},
}
OPTIMIZER_SHARED = {"groups": ROLE_POLICY, "lr_scaling": "none", "reference_batch_size": None}
SCHEDULER_SHARED = {"warmup_steps": 0, "warmup_fraction": 0.0}
OWN_VALUES = {("lars", "groups"): {**ROLE_POLICY, "scalar": {"lr_mult": 1e-3, "weight_decay": False}}}


def _composed(group: str, names: list[str]) -> dict[str, dict]:
    """Each option as Hydra composes it alone (`+group=name`, no primary config: quick), in one session."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return {
                n: OmegaConf.to_container(hydra_compose(None, [f"+{group}={n}"])[group], resolve=False) for n in names
            }
    finally:
        GlobalHydra.instance().clear()


@pytest.mark.parametrize("group, shared", [("optimizer", OPTIMIZER_SHARED), ("scheduler", SCHEDULER_SHARED)])
def test_every_option_gets_the_shared_keys_from_its_base_and_lists_only_its_own(group, shared):
    names = group_options(group)
    assert "_base" not in names and len(names) >= (40 if group == "optimizer" else 13)
    for name, cfg in _composed(group, names).items():
        for key, value in shared.items():
            assert cfg[key] == OWN_VALUES.get((name, key), value), (name, key)
        # load_option (tune, list, the registry) composes the defaults list as Hydra does
        assert load_option(group, name) == cfg, name
        # the yaml itself keeps only what differs from the base
        own = OmegaConf.to_container(OmegaConf.load(CONF_DIR / group / f"{name}.yaml"))
        assert own.pop("defaults") == ["_base", "_self_"], name
        assert not [k for k in shared if k in own and own[k] == shared[k]], name


def test_a_user_yaml_may_pull_the_base_or_list_every_key(tmp_path):
    conf = tmp_path / "my_conf" / "optimizer"
    conf.mkdir(parents=True)
    (conf / "short.yaml").write_text(
        "defaults: [_base, _self_]\nname: short\ntarget: torch.optim.SGD\n"
        "source: mine\nstate: 0x\nlr: 0.1\nlr_scaling: sqrt\nreference_batch_size: 64\n"
    )
    (conf / "plain.yaml").write_text("name: plain\ntarget: torch.optim.SGD\nsource: mine\nstate: 0x\nlr: 0.1\n")
    searchpath = f"hydra.searchpath=[file://{tmp_path / 'my_conf'}]"
    try:
        short = compose(["optimizer=short", searchpath]).optimizer
        assert short.groups == ROLE_POLICY and short.lr_scaling == "sqrt" and short.reference_batch_size == 64
        assert load_option("optimizer", "short")["groups"] == ROLE_POLICY
        plain = compose(["optimizer=plain", searchpath, "trainer.max_steps=3"])  # no defaults list: as before
        validate(plain)
        assert "groups" not in plain.optimizer and "plain" in group_options("optimizer")
    finally:
        from optbench.confdir import use_overrides

        use_overrides([])


def test_the_trainer_schema_has_exactly_the_yaml_keys():
    yaml = OmegaConf.load(CONF_DIR / "trainer" / "default.yaml")
    assert yaml.pop("defaults") == ["_schema", "_self_"]
    fields = {f.name for f in dataclasses.fields(TrainerSchema)}
    assert set(yaml) <= fields and fields - set(yaml) <= {"max_time_s"}
    cfg = compose([]).trainer
    assert OmegaConf.get_type(cfg) is TrainerSchema and cfg.max_time_s is None
    assert cfg.averaging.lookahead_power == 3 and isinstance(cfg.averaging.lookahead_power, int)  # kept as written


@pytest.mark.parametrize(
    "override, message",
    [
        ("trainer.max_steps=abc", "trainer.max_steps='abc' is invalid: must be a whole number"),
        ("trainer.max_steps=2.5", "trainer.max_steps=2.5 is invalid: must be a whole number"),
        ("trainer.compile=maybe", "trainer.compile='maybe' is invalid; valid choices: true, false"),
        ("trainer.grad_clip=abc", "trainer.grad_clip='abc' is invalid: must be a number"),
        ("trainer.max_time_s=abc", "trainer.max_time_s='abc' is invalid: must be a number (or null)"),
        ("trainer.averaging.ema_decay=x", "trainer.averaging.ema_decay='x' is invalid: must be a number"),
        (
            "trainer.clock_includes=data_init",
            "trainer.clock_includes='data_init' is invalid: must be a list of strings",
        ),
        ("trainer.max_stepz=5", "unknown key 'trainer.max_stepz'; valid keys under 'trainer': amp, averaging, "),
        (
            "optimizer.groups.hed.lr_mult=0.1",
            "unknown key 'optimizer.groups.hed.lr_mult'; valid keys under "
            "'optimizer.groups': embedding, head, matrix, scalar",
        ),
        ("trainer", "cannot parse override 'trainer' (expected key=value)"),
        ("optimizer.lr=[1,", "cannot parse override 'optimizer.lr=[1,': not Hydra's override grammar"),
        ("optimizer=nope", "unknown optimizer 'nope'; valid choices: adafactor, "),
        (
            "optimizer=_base",
            "unknown optimizer '_base' (the keys its options share, not one of them); valid choices: ada",
        ),
        (
            "trainer=_schema",
            "unknown trainer '_schema' (the keys its options share, not one of them); valid choices: default",
        ),
    ],
)
def test_composition_errors_are_one_line_from_the_exception_objects(override, message):
    with pytest.raises(ConfigError) as e:
        compose([override])
    assert str(e.value).startswith(message) and "\n" not in str(e.value)


@pytest.mark.parametrize(
    "override, message",
    [
        (
            "optimizer.reference_batch_size=abc",
            "optimizer.reference_batch_size='abc' is invalid: must be a whole number (or null)",
        ),
        ("optimizer.lr_grid=[1,a]", "optimizer.lr_grid=[1, 'a'] is invalid: must be a list of numbers (or null)"),
        ("optimizer.lr_scaling=[1]", "optimizer.lr_scaling=[1] is invalid: must be a string"),
        ("scheduler.warmup_steps=1.5", "scheduler.warmup_steps=1.5 is invalid: must be a whole number"),
        ("scheduler.warmup_fraction=abc", "scheduler.warmup_fraction='abc' is invalid: must be a number"),
    ],
)
def test_meta_keys_of_the_open_groups_are_checked_by_their_schema(override, message):
    cfg = compose([override])  # optimizer and scheduler nodes stay open: Hydra composes it
    with pytest.raises(ConfigError, match="^" + message.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
        validate(cfg)
