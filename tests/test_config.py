"""Config composition and the errors a user gets for bad keys, values, presets and envs."""

import copy
import itertools
import warnings

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reverie import cli
from reverie import config as C
from reverie.config import preset_files
from reverie.errors import ConfigError, ReverieWarning

AGENTS = ["dreamerv3", "dreamerv3_2023", "dreamerv2", "dreamerv1", "planet"]


def test_presets_compose_in_order_then_overrides():
    cfg = C.make_config(C.compose_presets(["size12m", "debug"]), ["model.rssm.deter=96"])
    assert cfg.model.rssm.deter == 96  # override wins
    assert cfg.model.rssm.hidden == 32  # debug came after size12m
    cfg = C.make_config(C.compose_presets(["debug", "size12m"]))
    assert cfg.model.rssm.hidden == 256 and cfg.behavior.actor.units == 256


def test_default_presets_fill_the_kinds_not_named():
    assert C.compose_presets([]) == ["dreamerv3", "classic"]
    assert C.compose_presets(["size12m"]) == ["dreamerv3", "classic", "size12m"]


def test_the_dreamerv3_preset_sets_no_value_its_values_are_the_schema_defaults():
    assert set(C.read_preset("dreamerv3")) <= {"_kind", "_reset"}
    assert C.make_config(["dreamerv3"]) == C.Config()


def test_dreamerv3_named_after_the_suite_takes_back_the_suites_tuning_but_not_its_schedule():
    suite, named = C.make_config(C.compose_presets([])), C.make_config(C.compose_presets(["dreamerv3"]))
    assert (suite.optim.lr, suite.optim.warmup, suite.batch_length) == (3e-4, 100, 32)
    assert (named.optim.lr, named.optim.warmup, named.batch_length) == (4e-5, 1000, 64)
    assert named.run.train_ratio == suite.run.train_ratio == 64


@pytest.mark.parametrize("first, second", list(itertools.permutations(AGENTS, 2)))
def test_agent_presets_replace_one_another_in_any_order(first, second):
    for before, after in (([], []), ([], ["size12m"]), (["size12m"], [])):
        alone = C.make_config(C.compose_presets([*before, second, *after]))
        assert C.make_config(C.compose_presets([*before, first, second, *after])) == alone


def test_an_agent_preset_keeps_what_a_suite_named_after_the_earlier_agent_set():
    cfg = C.make_config(["dreamerv1", "dmc_proprio", "dreamerv3"])
    assert cfg == C.make_config(["dmc_proprio", "dreamerv3"])
    assert cfg.run.train_ratio == 1024 and cfg.run.train_every == 1 and cfg.model.rssm.latent == "categorical"


def test_the_suites_include_size1m_instead_of_repeating_it():
    for suite in ("classic", "dmc_proprio"):
        assert C.read_preset(suite)["_include"] == ["size1m"]
        cfg = C.make_config([suite])
        assert (cfg.model.rssm.deter, cfg.model.rssm.hidden, cfg.model.rssm.classes) == (512, 64, 4)
        assert {cfg.model.encoder.depth, cfg.model.decoder.depth} == {4} and cfg.behavior.critic.units == 64


def test_no_preset_sets_a_key_to_the_value_its_includes_give_it():
    for name in C.available_presets():
        raw = C.read_preset(name)
        included, set_by_includes = C.Config(), set()
        for other in raw.get("_include", []):
            C.update(included, {k: v for k, v in C.load_preset(other).items() if k != "_kind"}, touched=set_by_includes)
        for key, value in C.flatten({k: v for k, v in raw.items() if k not in preset_files.PRESET_KEYS}).items():
            paths: set[str] = set()
            after = C.update(copy.deepcopy(included), {key: value}, touched=paths)
            repeated = [p for p in sorted(paths & set_by_includes) if C.get(after, p) == C.get(included, p)]
            assert not repeated, f"preset '{name}' sets {key} to what its _include gives {repeated}"


def test_no_preset_repeats_every_key_of_another_instead_of_including_it():
    resolved = {name: C.load_preset(name) for name in C.available_presets()}
    for name in resolved:
        own = C.flatten({k: v for k, v in C.read_preset(name).items() if k not in preset_files.PRESET_KEYS})
        for other, theirs in resolved.items():
            keys = {k: v for k, v in theirs.items() if k != "_kind"}
            if other != name and len(keys) > 1:
                assert not keys.items() <= own.items(), f"preset '{name}' repeats '{other}': add _include: [{other}]"


def test_a_suite_does_not_warn_about_the_size_preset_it_includes():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for names in (["classic"], ["dmc_proprio"], ["size1m"], ["size12m"], ["classic", "size12m"]):
            C.make_config(C.compose_presets(names))
    assert C.make_config(C.compose_presets(["size12m"])).model.rssm.deter == 2048
    with pytest.warns(ReverieWarning, match=r"suite preset 'classic' overrides 12 keys of the size preset 'size12m'"):
        assert C.make_config(["size12m", "classic"]).model.rssm.deter == 512


@pytest.fixture
def preset_dir(tmp_path, monkeypatch):
    """An empty preset folder in place of reverie/config/presets/; write presets with `write`."""
    monkeypatch.setattr(preset_files, "PRESET_DIR", tmp_path)
    return tmp_path


def write(folder, **presets):
    for name, text in presets.items():
        (folder / f"{name}.yaml").write_text(text)


def test_an_included_preset_comes_first_and_the_including_presets_keys_win(preset_dir):
    write(preset_dir, base='_kind: size\n"*.units": 48\nmodel.rssm: {deter: 96, hidden: 24}\nmodel.encoder.depth: 8\n',
          top='_kind: suite\n_include: [base]\nmodel.rssm.deter: 128\n"*.depth": 16\nmodel.encoder.units: 32\n',
          reset='_include: base\n_reset: ["*.units", model.rssm.hidden]\n')
    cfg = C.make_config(["top"])
    assert (cfg.model.rssm.deter, cfg.model.rssm.hidden) == (128, 24)  # its own key wins; the rest is included
    assert cfg.model.encoder.units == 32 and cfg.behavior.actor.units == 48
    assert cfg.model.encoder.depth == cfg.model.decoder.depth == 16  # its wildcard comes after the include's key
    assert C.load_preset("top")["_kind"] == "suite"
    cfg = C.make_config(["reset"])  # `_reset` after the includes: back to the schema defaults
    assert (cfg.model.rssm.deter, cfg.model.rssm.hidden, cfg.behavior.actor.units, cfg.model.reward.units) == (96, 64, 64, 64)


@pytest.mark.parametrize("files, pattern", [
    ({"a": "_include: [nope]\n"}, r"preset 'a' includes unknown preset 'nope'; choose from: a$"),
    ({"a": "_include: [b]\n", "b": "_include: [a]\n"}, r"preset 'a' includes itself \(a → b → a\); remove one"),
    ({"a": "_include: [a]\n"}, r"preset 'a' includes itself \(a → a\)"),
    ({"a": "_include: {b: 1}\n"}, r"preset 'a': _include must be a list of names, e.g. _include: \[size1m\]"),
    ({"a": "_reset: [model.rssm.detr]\n"}, r"unknown config key 'model.rssm.detr' in the _reset of preset 'a'"),
    ({"a": "_kind: model\n"}, r"preset 'a' has _kind 'model'; use one of agent, size, suite"),
    ({"a": "_inculde: [b]\n", "b": ""}, r"unknown config key '_inculde' in preset 'a'"),
    ({"a": "- 1\n"}, r"preset 'a' .* is not a mapping of config keys"),
])
def test_preset_errors_are_one_line_and_name_the_preset(preset_dir, files, pattern):
    write(preset_dir, **files)
    with pytest.raises(ConfigError, match=pattern):
        C.make_config(["a"])


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
    text = text.replace("kernels:\n", "kernels:\n  posterior_loop: true\n  rms_norm: false\n  twohot_loss: true\n", 1)
    (tmp_path / "config.yaml").write_text(text)
    assert "dist: mse" in text and "rms_norm: false" in text and C.load(tmp_path / "config.yaml") == cfg
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
