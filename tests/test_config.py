"""Config composition and the errors a user gets for bad keys, values, presets and envs."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reverie import cli
from reverie import config as C
from reverie.errors import ConfigError


def test_presets_compose_in_order_then_overrides():
    cfg = C.make_config(C.compose_presets(["size12m", "debug"]), ["model.rssm.deter=96"])
    assert cfg.model.rssm.deter == 96  # override wins
    assert cfg.model.rssm.hidden == 32  # debug came after size12m
    cfg = C.make_config(C.compose_presets(["debug", "size12m"]))
    assert cfg.model.rssm.hidden == 256 and cfg.behavior.actor.units == 256


def test_default_presets_fill_the_kinds_not_named():
    assert C.compose_presets([]) == ["dreamerv3", "classic"]
    assert C.compose_presets(["size12m"]) == ["dreamerv3", "classic", "size12m"]


@pytest.mark.parametrize("name, deter, hidden, classes, units", [
    ("size1m", 512, 64, 4, 64), ("size12m", 2048, 256, 16, 256), ("size200m", 8192, 1024, 64, 1024),
    ("size400m", 12288, 1536, 96, 1536),
])
def test_size_presets_match_the_design_table(name, deter, hidden, classes, units):
    cfg = C.make_config([name])
    assert (cfg.model.rssm.deter, cfg.model.rssm.hidden, cfg.model.rssm.classes) == (deter, hidden, classes)
    assert cfg.model.encoder.units == cfg.behavior.critic.units == units


def test_wildcard_keys_set_every_match():
    cfg = C.make_config([], {"*.units": 48})
    assert {cfg.model.encoder.units, cfg.model.decoder.units, cfg.model.reward.units,
            cfg.behavior.actor.units, cfg.behavior.critic.units} == {48}


def test_unknown_key_names_it_and_suggests():
    with pytest.raises(ConfigError, match=r"unknown config key 'model\.rssm\.detr'.*did you mean 'model\.rssm\.deter'"):
        C.make_config([], ["model.rssm.detr=4"])


@pytest.mark.parametrize("item, pattern", [
    ("model.rssm.deter=abc", r"'model\.rssm\.deter' expects int, got 'abc'"),
    ("run.train_ratio=fast", r"'run\.train_ratio' expects a finite float"),
    ("replay.online=maybe", r"'replay\.online' expects bool"),
    ("model.encoder.mults=[a]", r"'model\.encoder\.mults' expects"),
    ("batch_size=1.5", r"'batch_size' expects int"),
    ("model.encoder.resize=avg", r"model\.encoder\.resize must be pool or stride"),
    ("run.precision=fp16", r"run\.precision must be float32 or bfloat16"),
])
def test_wrong_types_name_the_key(item, pattern):
    with pytest.raises(ConfigError, match=pattern):
        C.make_config([], [item])


def test_values_are_coerced():
    cfg = C.make_config([], ["run.train_ratio=64", "replay.online=false", "run.steps=1e5"])
    assert cfg.run.train_ratio == 64.0 and cfg.replay.online is False
    assert cfg.run.steps == 100000


def test_save_and_load_round_trip(tmp_path):
    cfg = C.make_config(C.compose_presets(["debug"]), ["seed=7", "model.encoder.mults=[2,2]"])
    C.save(cfg, tmp_path / "config.yaml")
    assert C.load(tmp_path / "config.yaml") == cfg


def test_a_saved_config_of_an_earlier_version_loads_without_its_retired_keys(tmp_path):
    cfg = C.make_config(C.compose_presets(["debug"]), ["seed=7"])
    C.save(cfg, tmp_path / "config.yaml")
    text = (tmp_path / "config.yaml").read_text().replace("  encoder:\n", "  encoder:\n    dist: mse\n", 1)
    (tmp_path / "config.yaml").write_text(text)
    assert "dist: mse" in text and C.load(tmp_path / "config.yaml") == cfg
    (tmp_path / "config.yaml").write_text(text.replace("  encoder:\n", "  encoder:\n    colour: red\n", 1))
    with pytest.raises(ConfigError, match=r"unknown config key 'model.encoder.colour' in .*config.yaml"):
        C.load(tmp_path / "config.yaml")


@settings(max_examples=100, deadline=None)
@given(st.text(min_size=1, max_size=30).filter(lambda s: "*" not in s and s not in C.leaf_paths(C.Config())))
def test_any_unknown_key_is_a_config_error(key):
    with pytest.raises(ConfigError, match="unknown config key"):
        C.make_config([], {key: "1"})


@settings(max_examples=100, deadline=None)
@given(st.integers(min_value=1, max_value=10**9))
def test_integer_overrides_round_trip(value):
    assert C.make_config([], [f"run.steps={value}"]).run.steps == value


def run_cli(args, capsys):
    code = cli.main(args)
    captured = capsys.readouterr()
    return code, captured.err.strip().splitlines()


@pytest.mark.parametrize("args, pattern", [
    (["train", "--preset", "nope"], "unknown preset 'nope'"),
    (["train", "model.rssm.detr=3"], "unknown config key 'model.rssm.detr'"),
    (["train", "model.rssm.deter=x"], "expects int"),
    (["train", "oops"], "not of the form key=value"),
    (["train", "--env", "NoSuchEnv-v9"], "unknown environment 'NoSuchEnv-v9'"),
    (["train", "--env", "envs_fixtures:make_tuple_obs_env"], "observation entry 'obs/1' has space Text("),
    (["train", "--steps", "0"], "--steps must be a positive"),
    (["train", "run.steps=0"], "run.steps must be ≥ 1"),
    (["train", "--steps", "-5"], "--steps must be a positive"),
    (["eval", "--logdir", "/nonexistent/run"], "holds no run"),
])
def test_cli_errors_are_one_line_and_exit_2(args, pattern, capsys, tmp_path):
    if args[0] == "train":
        args = args + ["--logdir", str(tmp_path / "run")]
    code, lines = run_cli(args, capsys)
    assert code == 2
    assert len(lines) == 1 and lines[0].startswith("reverie: error:") and pattern in lines[0]
    assert not (tmp_path / "run").exists()  # a refused start leaves no run folder behind


def test_cli_unwritable_logdir(capsys, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code, lines = run_cli(["train", "--logdir", str(blocker / "run")], capsys)
    assert code == 2 and "cannot write to logdir" in lines[0]
    assert blocker.read_text() == "x"


def test_every_config_key_is_documented_in_the_readme():
    from pathlib import Path

    readme = (Path(__file__).parents[1] / "README.md").read_text()
    missing = [key for key in C.leaf_paths(C.Config()) if f"`{key}`" not in readme]
    assert not missing, f"add these keys to the README's config table: {missing}"
