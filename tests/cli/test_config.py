"""Every config group entry composes and validates; bad keys and names fail with one clear message."""

import dataclasses
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra

import sslrun.finetune
import sslrun.pretrain
from sslrun.app import precheck
from sslrun.backbones import BACKBONES
from sslrun.config import ViewsConfig
from sslrun.data import DATASETS
from sslrun.errors import UserError
from sslrun.methods import METHODS
from sslrun.optim import OPTIMIZERS

CONFIGS = Path(sslrun.pretrain.__file__).parent / "configs"
REGISTRIES = {"method": METHODS, "backbone": BACKBONES, "data": DATASETS, "optim": OPTIMIZERS}
COMMANDS = {"pretrain": sslrun.pretrain, "finetune": sslrun.finetune}
GROUP_ENTRIES = [
    (group, path.stem)
    for group in ("method", "backbone", "data", "trainer", "logger", "optim")
    for path in sorted((CONFIGS / group).glob("*.yaml"))
]


def entries_for(command: str):
    return [(g, n) for g, n in GROUP_ENTRIES if not (command == "finetune" and g == "method")]


@pytest.mark.parametrize("command", COMMANDS)
def test_every_group_entry_composes_and_validates(command):
    for group, name in entries_for(command):
        precheck(command, COMMANDS[command], [f"{group}={name}"])


@pytest.mark.parametrize("group", REGISTRIES)
def test_yaml_entries_and_registry_names_match(group):
    stems = sorted(p.stem for p in (CONFIGS / group).glob("*.yaml"))
    assert stems == REGISTRIES[group].names()
    GlobalHydra.instance().clear()
    with initialize_config_module("sslrun.configs", version_base="1.3"):
        for stem in stems:
            assert compose("pretrain", overrides=[f"{group}={stem}"])[group].name == stem


def test_typo_key_names_key_and_valid_choices():
    with pytest.raises(UserError) as err:
        precheck("pretrain", sslrun.pretrain, ["trainer.max_epoch=3"])
    message = str(err.value)
    assert "'trainer.max_epoch'" in message and "did you mean 'max_epochs'" in message and "precision" in message


def test_unknown_method_lists_choices():
    with pytest.raises(UserError) as err:
        precheck("pretrain", sslrun.pretrain, ["method=simclrr"])
    assert "unknown method 'simclrr'" in str(err.value) and "contrastive" in str(err.value)


def test_wrong_type_and_appended_unknown_key_are_rejected():
    with pytest.raises(UserError, match="trainer.max_epochs"):
        precheck("pretrain", sslrun.pretrain, ["trainer.max_epochs=many"])
    with pytest.raises(UserError, match="unknown key 'method.temprature'"):
        precheck("pretrain", sslrun.pretrain, ["+method.temprature=0.5"])
    with pytest.raises(UserError, match="precision"):
        precheck("pretrain", sslrun.pretrain, ["trainer.precision=bf17"])


def test_every_sweep_combination_is_checked():
    precheck("pretrain", sslrun.pretrain, ["backbone=resnet18,convnet", "optim.lr=0.1,0.2"])
    with pytest.raises(UserError, match="unknown backbone 'resnet9'"):
        precheck("pretrain", sslrun.pretrain, ["backbone=resnet18,resnet9"])


@pytest.mark.parametrize("name", DATASETS.names())
def test_every_view_key_can_be_overridden_on_every_dataset(name):
    """Hydra only overrides keys the YAML names: each data YAML must list every view key (null = the recipe's)."""
    keys = [f.name for f in dataclasses.fields(ViewsConfig)]
    precheck("pretrain", sslrun.pretrain, [f"data={name}", *(f"data.views.{key}=0.5" for key in keys[1:-1])])
    precheck("pretrain", sslrun.pretrain, [f"data={name}", "data.views.recipe=imagenet"])


@pytest.mark.parametrize("name", METHODS.names())
def test_method_yaml_lists_every_key_with_the_schema_default(name):
    """Hydra overrides only keys a YAML has, and the YAML is what users read: it must name every key of the method's
    schema, with the default the method module documents."""
    import yaml

    values = yaml.safe_load((Path(sslrun.pretrain.__file__).parent / "configs" / "method" / f"{name}.yaml").read_text())
    values.pop("defaults", None)  # group choices the method overrides (gan: optim=adam), not keys of its own
    schema = METHODS.get(name).Config(name=name)
    assert set(values) == {f.name for f in dataclasses.fields(schema)}
    for key, value in values.items():
        assert (
            value == pytest.approx(getattr(schema, key)) if isinstance(value, float) else value == getattr(schema, key)
        ), key


@pytest.mark.parametrize("name", METHODS.names())
def test_every_checked_method_value_is_refused_before_any_work(name):
    """Each method key that carries a rule refuses a negative value in the pre-flight check, naming the key."""
    ruled = [f.name for f in dataclasses.fields(METHODS.get(name).Config) if "rule" in f.metadata]
    assert ruled, f"method={name} has no checked key"
    for key in ruled:
        with pytest.raises(UserError, match=rf"method\.{key}"):
            precheck("pretrain", sslrun.pretrain, [f"method={name}", f"method.{key}=-1.5"])


@pytest.mark.parametrize(
    "command,override,fragment",
    [
        ("pretrain", "method.temperature=0", "method.temperature=0.0 must be a number > 0"),
        ("pretrain", "backbone.width=-1", "backbone.width=-1.0 must be a number > 0"),
        ("pretrain", "data.views.flip_p=1.5", "data.views.flip_p=1.5 must be between 0 and 1"),
        (
            "pretrain",
            "backbone=resnet18 backbone.stem=big",
            "backbone.stem='big' must be one of: auto, cifar, imagenet",
        ),
        ("pretrain", "data.image_size=0", "data.image_size=0 must be an integer > 0, or auto"),
        ("pretrain", "optim.warmup_epochs=-2", "optim.warmup_epochs=-2 must be a number >= 0, or auto"),
        ("pretrain", "resume=nowhere.ckpt", "resume='nowhere.ckpt' must be one of: auto, never, overwrite"),
        ("pretrain", "trainer.sync_batchnorm=true", "trainer.sync_batchnorm=true needs GPUs"),
        ("finetune", "mode=probe", "mode='probe' must be one of: linear, full"),
        ("finetune", "eval.layer=layer9", "eval.layer='layer9' must be one of: last, layer1"),
        ("pretrain", "optim.scale_lr=cubic", "optim.scale_lr='cubic' must be linear, sqrt, none, true or false"),
        ("pretrain", "optim=adam optim.momentum=0.9", "unknown key 'optim.momentum'"),
        ("pretrain", "data=imagefolder data.root=${oc.env:SSLRUN_NEVER_SET}", "cannot resolve data.root: Environment"),
        ("pretrain", "optim.lr=${optim.nowhere}", "cannot resolve optim.lr"),
        ("pretrain", "data.views.batched=maybe", "data.views.batched='maybe' must be true, false or auto"),
        ("pretrain", "method.loss_backend=fast", "method.loss_backend='fast' must be one of: auto, triton, chunked"),
        (
            "pretrain",
            "backbone=resnet18 backbone.patch_size=4",
            "unknown key 'backbone.patch_size'; valid keys under 'backbone': name, stem",
        ),
        ("pretrain", "backbone=vit_tiny backbone.stem=cifar", "unknown key 'backbone.stem'"),
        (
            "finetune",
            "backbone.stem=cifar",
            "unknown key 'backbone.stem'; valid keys under 'backbone': name, weights, weights_strict, width",
        ),
        ("pretrain", "method=jigsaw method.grid=1", "method.grid=1 must be an integer >= 2, or auto"),
    ],
)
def test_value_checks_run_in_the_preflight(command, override, fragment):
    with pytest.raises(ValueError) as err:
        precheck(command, COMMANDS[command], override.split())
    assert fragment in str(err.value)


@pytest.mark.parametrize(
    "overrides",
    [["a=1,2", "b=x", "c=3,4,5"], ["x=range(1,4)", "y='a,b'", "z=choice(1,2)"], ["+sweep=a", "~trainer.max_steps"]],
)
def test_sweep_combinations_match_hydras_basic_sweeper(overrides):
    """sslrun expands a -m sweep through Hydra's public override API; the jobs are the ones Hydra's own (private)
    basic sweeper runs, in its order."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from sslrun.app import sweep_combinations

    parsed = OverridesParser.create().parse_overrides(overrides)
    assert sweep_combinations(parsed) == BasicSweeper.split_arguments(parsed, None)[0]


def test_sslrun_uses_no_private_hydra_module():
    sources = (Path(__file__).parents[2] / "sslrun").rglob("*.py")
    assert not [p.name for p in sources if "hydra._internal" in p.read_text()]
