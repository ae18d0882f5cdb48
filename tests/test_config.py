from pathlib import Path

import pytest

from mm_gpg.config import Config, ConfigError, load_config, parse_override

CONFIGS = sorted((Path(__file__).parent.parent / "configs").glob("*.yaml"))


def test_defaults_then_yaml_then_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  lr: 0.001\n  steps: 7\nrollout:\n  group_size: 4\n")
    config = load_config(path, ["train.lr=5e-5", "algorithm.name=grpo"])
    assert config.train.lr == 5e-5          # override beats YAML
    assert config.train.steps == 7          # YAML beats default
    assert config.rollout.group_size == 4
    assert config.rollout.top_k == 0        # default kept
    assert config.algorithm.name == "grpo"


def test_unknown_yaml_key_names_key_and_nearest(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("rollout:\n  group_sise: 4\n")
    with pytest.raises(ConfigError, match=r"c.yaml: unknown config key 'rollout.group_sise' \(did you mean "
                                          r"'rollout.group_size'"):
        load_config(path)


def test_unknown_override_key():
    with pytest.raises(ConfigError, match=r"unknown config key 'train.lrr' \(did you mean 'train.lr'"):
        load_config(None, ["train.lrr=1"])


def test_wrong_type_is_an_error():
    with pytest.raises(ConfigError, match="'rollout.group_size' expects int"):
        load_config(None, ["rollout.group_size=eight"])
    with pytest.raises(ConfigError, match="expects bool"):
        load_config(None, ["model.train_projector=3"])


def test_int_is_accepted_for_float():
    assert load_config(None, ["train.lr=1"]).train.lr == 1.0


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "absent.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


def test_cross_field_validation():
    with pytest.raises(ConfigError, match="zero_stage"):
        load_config(None, ["train.zero_stage=4"])
    with pytest.raises(ConfigError, match="min_valid_fraction"):
        load_config(None, ["algorithm.min_valid_fraction=1.5"])


def test_override_parsing():
    assert parse_override("a.b=3") == ("a.b", 3)
    assert parse_override("a=1e-4") == ("a", 1e-4)
    assert parse_override("a=true") == ("a", True)
    assert parse_override("a=[1, 2]") == ("a", [1, 2])
    with pytest.raises(ConfigError, match="key=value"):
        parse_override("novalue")


def test_every_field_has_a_docstring():
    import ast
    import inspect

    import mm_gpg.config as module
    tree = ast.parse(inspect.getsource(module))
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name.endswith("Config") and node.name != "ConfigError":
            body = node.body
            for i, stmt in enumerate(body):
                if isinstance(stmt, ast.AnnAssign):
                    nxt = body[i + 1] if i + 1 < len(body) else None
                    assert isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant), \
                        f"{node.name}.{stmt.target.id} has no docstring"


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_shipped_configs_validate(path):
    load_config(path)
    assert path.read_text().startswith("#"), "each config's header comment shows its command"
