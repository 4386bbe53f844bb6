"""The strict config loader: key forms, method presets, coercion, range checks, YAML files, round trips."""

from __future__ import annotations

import dataclasses

import pytest

from entropic_tune import methods
from entropic_tune.config import (
    Config,
    ControllerConfig,
    load_config,
    parse_override,
    replace,
    to_dict,
    to_flat,
    valid_keys,
)
from entropic_tune.errors import UserError

# --- key forms -----------------------------------------------------------------------------------


def test_defaults_build_and_method_is_grpo():
    cfg = load_config()
    assert cfg == load_config({})
    assert cfg.method == "grpo"
    assert cfg.loss.name == "grpo" and cfg.controller.name == "constant"


def test_nested_flat_slash_and_set_strings_are_equal():
    nested = load_config({"controller": {"kp": 0.5, "ki": 0.02}, "train": {"seed": 7}})
    dotted = load_config({"controller.kp": 0.5, "controller.ki": 0.02, "train.seed": 7})
    slashed = load_config({"controller/kp": 0.5, "controller/ki": 0.02, "train/seed": 7})
    overrides = load_config(overrides=["controller.kp=0.5", "controller.ki=2e-2", "train.seed=7"])
    mixed = load_config({"controller": {"kp": 0.5}, "controller/ki": 0.02}, ["train.seed=7"])
    assert nested == dotted == slashed == overrides == mixed
    assert nested.controller.kp == 0.5 and nested.controller.ki == 0.02 and nested.train.seed == 7


def test_later_sources_win(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("controller:\n  kp: 1.0\n  ki: 0.3\n")
    cfg = load_config({"controller.kp": 2.0}, ["controller.kp=3.0"], files=[path])
    assert cfg.controller.kp == 3.0  # --set beats dict beats file
    assert cfg.controller.ki == 0.3


def test_parse_override_reads_yaml_values():
    assert parse_override("controller.anti_windup=false") == ("controller.anti_windup", False)
    assert parse_override(" model.path = null") == ("model.path", None)
    assert parse_override("loss.name=grpo") == ("loss.name", "grpo")
    with pytest.raises(UserError, match="key=value"):
        parse_override("controller.kp")


@pytest.mark.parametrize(
    ("data", "closest"),
    [
        ({"controller": {"kpp": 1.0}}, "controller.kp"),
        ({"controler/kp": 1.0}, "controller.kp"),
        ({"rollout.group_sise": 4}, "rollout.group_size"),
        ({"methd": "grpo"}, "method"),
    ],
)
def test_unknown_key_names_closest_valid_key(data, closest):
    with pytest.raises(UserError, match=f"unknown key .*did you mean '{closest}'"):
        load_config(data)


def test_unknown_key_in_set_string():
    with pytest.raises(UserError, match="--set: unknown key 'controller.kpp'.*'controller.kp'"):
        load_config(overrides=["controller.kpp=1"])


def test_unknown_method_lists_allowed_methods():
    with pytest.raises(UserError) as info:
        load_config({"method": "entropik"})
    message = str(info.value)
    assert "entropik" in message and "did you mean 'entropic'" in message
    for method in methods.METHODS:
        assert method in message


def test_section_must_be_a_mapping_and_empty_section_is_allowed(tmp_path):
    with pytest.raises(UserError, match="controller: expected a mapping"):
        load_config({"controller": 5})
    path = tmp_path / "empty_section.yaml"
    path.write_text("method: entropic\ncontroller:\n#  kp: 3.0\n")
    assert load_config(files=[path]) == load_config({"method": "entropic"})


# --- method presets ------------------------------------------------------------------------------


def test_entropic_preset_expands():
    cfg = load_config({"method": "entropic"})
    assert cfg.method == "entropic"
    assert cfg.loss.name == "entropic" and cfg.controller.name == "pi"
    assert cfg.controller.ki == ControllerConfig().ki > 0


def test_entropic_p_preset_sets_ki_zero():
    cfg = load_config({"method": "entropic_p"})
    assert cfg.loss.name == "entropic" and cfg.controller.name == "pi"
    assert cfg.controller.ki == 0.0


@pytest.mark.parametrize("method", methods.METHODS)
def test_every_method_preset_is_applied(method):
    flat = to_flat(load_config({"method": method}))
    for key, value in methods.method_preset(method).items():
        assert flat[key] == value


def test_explicit_keys_override_preset():
    cfg = load_config({"method": "entropic_p", "controller": {"ki": 0.3}})
    assert cfg.controller.ki == 0.3
    cfg = load_config({"method": "clip_higher", "loss.clip_eps_high": 0.25})
    assert cfg.loss.clip_eps_high == 0.25
    cfg = load_config({"method": "entropic"}, ["controller.name=constant"])
    assert cfg.controller.name == "constant" and cfg.loss.name == "entropic"


def test_method_from_set_string_and_file(tmp_path):
    assert load_config(overrides=["method=entropic_p"]).controller.ki == 0.0
    path = tmp_path / "m.yaml"
    path.write_text("method: adaptive_entropy\n")
    cfg = load_config(files=[path])
    assert cfg.loss.name == "adaptive_entropy" and cfg.controller.name == "adaptive"


# --- coercion ------------------------------------------------------------------------------------


def test_int_coerced_to_float_for_float_fields():
    cfg = load_config({"controller.kp": 3, "optim.lr": 1, "controller.target_entropy": 1})
    assert type(cfg.controller.kp) is float and cfg.controller.kp == 3.0
    assert type(cfg.optim.lr) is float
    assert type(cfg.controller.target_entropy) is float


def test_strings_from_cli_are_coerced():
    cfg = load_config(overrides=["optim.lr=1e-3", "train.seed=3", "controller.anti_windup=no"])
    assert cfg.optim.lr == 1e-3 and cfg.train.seed == 3 and cfg.controller.anti_windup is False
    assert load_config({"train.seed": 4.0}).train.seed == 4
    assert load_config({"model.path": "null"}).model.path is None


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("controller.kp", "abc"),
        ("controller.kp", True),
        ("controller.kp", float("nan")),
        ("controller.kp", None),
        ("controller.kp", [1.0]),
        ("rollout.group_size", 2.5),
        ("rollout.group_size", "four"),
        ("controller.anti_windup", "maybe"),
        ("controller.anti_windup", 2),
        ("model.path", ["a"]),
    ],
)
def test_bad_type_raises_user_error_naming_key(key, value):
    with pytest.raises(UserError, match=f"^{key}: "):
        load_config({key: value})


def test_user_error_is_value_error():
    with pytest.raises(ValueError):
        load_config({"controller.kp": "abc"})


# --- range checks --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "key"),
    [
        ({"controller.kp": -1.0}, "controller.kp"),
        ({"controller.ki": -0.1}, "controller.ki"),
        ({"controller.target_entropy": 0.0}, "controller.target_entropy"),
        ({"controller.target_entropy": -0.5}, "controller.target_entropy"),
        ({"loss.tau": 1.0}, "loss.tau"),
        ({"loss.tau": -0.1}, "loss.tau"),
        ({"controller.alpha_min": 1.0, "controller.alpha_max": 1.0}, "controller.alpha_min"),
        ({"controller.alpha_min": 0.5, "controller.alpha_max": -0.5}, "controller.alpha_min"),
        ({"rollout.group_size": 1}, "rollout.group_size"),
        ({"train.total_steps": 0}, "train.total_steps"),
        ({"train.total_steps": -5}, "train.total_steps"),
        ({"controller.coef_init": 1.0}, "controller.coef_init"),
        ({"controller.name": "pid"}, "controller.name"),
        ({"loss.name": "ppo"}, "loss.name"),
        ({"task.name": "jsonl"}, "task.path"),
        ({"loss.positive_weight": -0.1}, "loss.positive_weight"),
        ({"loss.entropy_quantile": 0.0}, "loss.entropy_quantile"),
        ({"loss.entropy_quantile": 1.5}, "loss.entropy_quantile"),
        ({"controller.actuator": "eps_high"}, "controller.actuator"),
        ({"controller.actuator_scale": 0.0}, "controller.actuator_scale"),
        ({"controller.coef_gate": "last"}, "controller.coef_gate"),
    ],
)
def test_range_checks_name_the_key(data, key):
    with pytest.raises(UserError, match=f"^{key}: "):
        load_config(data)


def test_boundary_values_are_accepted():
    cfg = load_config(
        {
            "controller.kp": 0,
            "controller.ki": 0,
            "loss.tau": 0.0,
            "rollout.group_size": 2,
            "train.total_steps": 1,
        }
    )
    assert cfg.loss.tau == 0.0 and cfg.rollout.group_size == 2


def test_actuator_error_lists_the_actuators():
    allowed = "allowed: entropic, entropy_bonus, clip_high, positive_weight"
    with pytest.raises(UserError, match=f"did you mean 'clip_high'.*{allowed}"):
        load_config({"controller.actuator": "clip_hig"})


def test_new_method_presets():
    assert load_config({"method": "w_reinforce"}).loss.positive_weight == 0.1
    assert load_config({"method": "nsr"}).loss.positive_weight == 0.0
    assert load_config({"method": "forking_tokens"}).loss.entropy_quantile == 0.2
    assert not load_config({"method": "clip_cov"}).loss.dual_clip  # Cui et al. have no dual-clip
    default = load_config()
    assert default.loss.dual_clip and default.loss.positive_weight == 1.0
    assert (default.controller.actuator, default.controller.actuator_scale) == ("entropic", 1.0)
    assert default.controller.coef_gate == "current"


def test_choice_error_lists_allowed_values():
    with pytest.raises(UserError, match="did you mean 'adaptive'.*allowed: constant, pi, adaptive"):
        load_config({"controller.name": "adaptiv"})


# --- YAML files ----------------------------------------------------------------------------------


def test_yaml_file_nested_and_flat_keys(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text(
        "method: entropic\n"
        "controller:\n  kp: 4\n  target_entropy: 0.3\n"
        "rollout/group_size: 4\n"
        "train.total_steps: 12\n"
    )
    cfg = load_config(files=[str(path)])
    assert cfg.method == "entropic" and cfg.controller.name == "pi"
    assert cfg.controller.kp == 4.0 and cfg.controller.target_entropy == 0.3
    assert cfg.rollout.group_size == 4 and cfg.train.total_steps == 12


def test_yaml_syntax_error_names_file(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("controller:\n  kp: [1, 2\n  ki: 0.1\n")
    with pytest.raises(UserError, match="broken.yaml.*YAML error"):
        load_config(files=[path])


def test_yaml_unknown_key_names_file(tmp_path):
    path = tmp_path / "typo.yaml"
    path.write_text("controller:\n  kpp: 1.0\n")
    with pytest.raises(UserError, match="typo.yaml: unknown key 'controller.kpp'"):
        load_config(files=[path])


def test_yaml_missing_file_and_non_mapping(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_config(files=[tmp_path / "nope.yaml"])
    path = tmp_path / "list.yaml"
    path.write_text("- 1\n- 2\n")
    with pytest.raises(UserError, match="list.yaml: expected a mapping"):
        load_config(files=[path])


def test_empty_yaml_file_gives_defaults(tmp_path):
    path = tmp_path / "empty.yaml"
    path.write_text("")
    assert load_config(files=[path]) == load_config()


# --- round trips and immutability ----------------------------------------------------------------


@pytest.mark.parametrize("method", methods.METHODS)
def test_to_dict_round_trip(method):
    cfg = load_config({"method": method, "controller.kp": 3, "train.seed": 5, "model.path": None})
    assert load_config(to_dict(cfg)) == cfg
    assert load_config(to_flat(cfg)) == cfg


def test_round_trip_keeps_overridden_preset_value():
    cfg = load_config({"method": "entropic_p", "controller.ki": 0.3})
    assert load_config(to_dict(cfg)).controller.ki == 0.3


def test_to_flat_covers_every_valid_key():
    assert set(to_flat(load_config())) == set(valid_keys())


def test_replace_revalidates():
    cfg = load_config({"method": "entropic"})
    assert replace(cfg, **{"train.seed": 3}).train.seed == 3
    assert cfg.train.seed == 0
    with pytest.raises(UserError, match="controller.kp"):
        replace(cfg, **{"controller.kp": -1})


def test_configs_are_frozen():
    cfg = load_config()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.method = "entropic"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.controller.kp = 1.0  # type: ignore[misc]
    assert isinstance(cfg, Config)


def test_derived_values_are_properties():
    cfg = load_config({"rollout.prompts_per_step": 3, "rollout.group_size": 4})
    assert cfg.rollout.batch_size == 12
    assert load_config().optim.on_policy
    assert not load_config({"optim.ppo_epochs": 2}).optim.on_policy
