"""Tests of the typed config (prorl/config.py) and of `prorl train`'s config error path."""

from __future__ import annotations

import dataclasses
import sys
import types

import pytest
import yaml

from prorl.config import (
    BUILTIN_PRESET,
    Config,
    ConfigError,
    apply_overrides,
    describe_fields,
    from_dict,
    load_config,
    parse_override,
    to_dict,
    validate,
)


def _flatten(tree: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in tree.items():
        if isinstance(v, dict) and k not in ("domain_weights", "overrides"):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _write(tmp_path, text: str, name: str = "cfg.yaml"):
    p = tmp_path / name
    p.write_text(text)
    return p


# --------------------------------------------------------------------------- defaults and loading

def test_defaults_are_the_papers_values():
    c = Config()
    assert c.rollout.n == 16
    assert c.rollout.temperature == 1.2
    assert c.algo.eps_low == 0.2 and c.algo.eps_high == 0.4
    assert c.algo.kl_coef == 1e-4 and c.algo.kl_estimator == "k3"
    assert c.algo.loss_agg_mode == "token-mean"
    assert c.algo.dynamic_sampling is True
    assert c.actor.lr == 2e-6
    assert c.validation.temperature == 0.6 and c.validation.top_p == 0.95
    validate(c)  # the defaults themselves are a valid config


def test_mutable_defaults_are_not_shared():
    a, b = Config(), Config()
    a.data.builtin_tasks.append("x")
    a.actor.betas[0] = 0.0
    assert b.data.builtin_tasks == ["add", "sort"] and b.actor.betas == [0.9, 0.999]


def test_none_loads_the_builtin_tiny_preset():
    cfg = load_config(None)
    preset = _flatten(yaml.safe_load(BUILTIN_PRESET.read_text()))
    got = _flatten(to_dict(cfg))
    for key, value in preset.items():
        assert got[key] == value, key
    assert cfg.rollout.n == 8 and cfg.actor.lr == 2e-4  # the preset's own values, not the defaults
    assert cfg.algo.eps_high == 0.4  # keys the preset leaves alone keep the defaults


def test_yaml_file_without_preset(tmp_path):
    p = _write(tmp_path, "rollout:\n  n: 4\nalgo:\n  eps_high: 0.28\n  kl_estimator: k1\n")
    cfg = load_config(p)
    assert cfg.rollout.n == 4 and cfg.algo.eps_high == 0.28 and cfg.algo.kl_estimator == "k1"
    # a file starts from the paper defaults, not from the tiny preset
    assert cfg.actor.lr == 2e-6 and cfg.rollout.temperature == 1.2 and cfg.model.path == "builtin:tiny"
    assert cfg.rollout.max_response_length == 8192


def test_empty_yaml_gives_defaults(tmp_path):
    assert load_config(_write(tmp_path, "")) == Config()
    assert load_config(_write(tmp_path, "# only a comment\n", "c.yaml")) == Config()


def test_yaml_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(_write(tmp_path, "- 1\n- 2\n"))
    with pytest.raises(ConfigError, match="algo.eps_high"):  # typo inside the file
        load_config(_write(tmp_path, "algo:\n  eps_hihg: 0.3\n", "typo.yaml"))


def test_overrides_win_over_file(tmp_path):
    p = _write(tmp_path, "rollout:\n  n: 4\n")
    cfg = load_config(p, ["rollout.n=6", "rollout.temperature=0.9"])
    assert cfg.rollout.n == 6 and cfg.rollout.temperature == 0.9
    cfg = load_config(None, ["rollout.n=6"])  # and over the preset
    assert cfg.rollout.n == 6 and cfg.actor.lr == 2e-4


# --------------------------------------------------------------------------- unparseable input is one clear line (issue 10 §4)

YAML_SYNTAX_ERRORS = [
    # (file text, 1-based line, column of the problem)
    ("rollout:\n  n: [1, 2\nalgo:\n  eps_high: 0.3\n", 3, 5),  # unclosed flow sequence
    ("rollout:\n  n: 4\n   temperature: 0.9\n", 3, 15),  # bad indentation
    ("algo:\n  eps_high: 'unterminated\n", 3, 1),  # unclosed quote
    ("trainer:\n  run_dir: runs/x\x07\n", 2, 18),  # a control character YAML rejects
]


@pytest.mark.parametrize("text, line, column", YAML_SYNTAX_ERRORS)
def test_yaml_syntax_error_names_file_line_and_column(tmp_path, text, line, column):
    p = _write(tmp_path, text, "broken.yaml")
    with pytest.raises(ConfigError) as e:
        load_config(p)
    msg = str(e.value)
    assert msg.startswith(f"{p}: YAML syntax error at line {line}, column {column}: "), msg
    assert "\n" not in msg


def test_unreadable_config_file_is_a_config_error(tmp_path):
    p = tmp_path / "latin1.yaml"
    p.write_bytes(b"rollout:\n  n: 4\ntrainer:\n  run_dir: caf\xe9\n")
    with pytest.raises(ConfigError, match=r"latin1\.yaml: line 4 is not UTF-8"):
        load_config(p)
    (tmp_path / "dir.yaml").mkdir()
    with pytest.raises(ConfigError, match=r"dir\.yaml: cannot read the config file"):
        load_config(tmp_path / "dir.yaml")


@pytest.mark.parametrize("override", ["rollout.n=[1, 2", "data.domain_weights={a: 1", "trainer.run_dir='x",
                                      "trainer.run_dir=@home", "trainer.run_dir=*anchor"])
def test_override_that_is_not_yaml_names_the_override(override):
    with pytest.raises(ConfigError) as e:
        parse_override(override)
    msg = str(e.value)
    assert msg.startswith(f"override {override!r}: the value is not valid YAML (line 1, column ") and "\n" not in msg
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(None, [override])


@pytest.mark.parametrize("make_args, expected", [
    (lambda d: [str(_write(d, YAML_SYNTAX_ERRORS[0][0], "broken.yaml"))], "broken.yaml: YAML syntax error at line 3, column 5"),
    (lambda d: [str(_write(d, "rollout:\n  n: 4\n", "ok.yaml")), "rollout.n=[1, 2"], "override 'rollout.n=[1, 2': the value is not valid YAML"),
    (lambda d: ["algo.eps_high=0.3", "rollout.n=[1, 2"], "override 'rollout.n=[1, 2': the value is not valid YAML"),
])
def test_cli_unparseable_config_is_one_line_exit_2(tmp_path, capsys, fake_train, make_args, expected):
    from prorl.cli import main

    assert main(["train", *make_args(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("prorl train: config error: ") and expected in err, err
    assert fake_train == []


# --------------------------------------------------------------------------- overrides parsed as YAML

@pytest.mark.parametrize(
    "text, path, value",
    [
        ("rollout.n=4", ["rollout", "n"], 4),
        ("algo.eps_high=0.28", ["algo", "eps_high"], 0.28),
        ("algo.norm_adv_by_std=false", ["algo", "norm_adv_by_std"], False),
        ("data.builtin_tasks=[add, sort]", ["data", "builtin_tasks"], ["add", "sort"]),
        ("data.domain_weights={a: 2, b: 1}", ["data", "domain_weights"], {"a": 2, "b": 1}),
        ("trainer.run_dir=runs/x=y", ["trainer", "run_dir"], "runs/x=y"),  # split at the first '='
        ("reward.server_url=", ["reward", "server_url"], ""),
    ],
)
def test_parse_override(text, path, value):
    assert parse_override(text) == (path, value)


def test_parse_override_needs_equals():
    with pytest.raises(ConfigError, match="section.key=value"):
        parse_override("rollout.n")


def test_override_values_are_typed():
    cfg = load_config(None, [
        "actor.lr=2e-6",  # YAML 1.1 reads '2e-6' as a string; it must still become a float
        "algo.kl_coef=1e-3",
        "algo.eps_high=1",  # int accepted for a float
        "data.builtin_tasks=[add]",
        "data.domain_weights={builtin/add: 2}",
        "actor.betas=[0.9, 0.95]",
        "algo.dynamic_sampling=false",
        "reset.steps=[100, 200]",
    ])
    assert cfg.actor.lr == 2e-6 and isinstance(cfg.actor.lr, float)
    assert cfg.algo.kl_coef == 1e-3
    assert cfg.algo.eps_high == 1.0 and isinstance(cfg.algo.eps_high, float)
    assert cfg.data.builtin_tasks == ["add"]
    assert cfg.data.domain_weights == {"builtin/add": 2.0}
    assert cfg.actor.betas == [0.9, 0.95]
    assert cfg.algo.dynamic_sampling is False
    assert cfg.reset.steps == [100, 200]


# --------------------------------------------------------------------------- rejected keys, types, choices

@pytest.mark.parametrize(
    "override, unknown, nearest",
    [
        ("algo.eps_hihg=0.3", "'algo.eps_hihg'", "'algo.eps_high'"),
        ("rollout.temprature=1.0", "'rollout.temprature'", "'rollout.temperature'"),
        ("algoo.eps_high=0.3", "'algoo'", "'algo'"),  # an unknown section is named as such
        ("actor.learning_rat=1", "'actor.learning_rat'", "lr"),  # no close name: the valid ones are listed
    ],
)
def test_unknown_key_names_nearest(override, unknown, nearest):
    with pytest.raises(ConfigError) as e:
        load_config(None, [override])
    msg = str(e.value)
    assert unknown in msg
    assert nearest in msg


def test_unknown_key_suggestion_is_the_dotted_key():
    with pytest.raises(ConfigError, match=r"did you mean 'algo\.eps_high'"):
        load_config(None, ["algo.eps_hihg=0.3"])


@pytest.mark.parametrize(
    "override, key",
    [
        ("rollout.n=abc", "rollout.n"),
        ("rollout.n=2.5", "rollout.n"),
        ("rollout.n=true", "rollout.n"),  # a boolean is not an int
        ("rollout.n=[1, 2]", "rollout.n"),  # a list where a scalar is expected
        ("algo.dynamic_sampling=3", "algo.dynamic_sampling"),
        ("algo.dynamic_sampling=maybe", "algo.dynamic_sampling"),
        ("algo.eps_high=abc", "algo.eps_high"),
        ("algo.eps_high=[0.2]", "algo.eps_high"),
        ("actor.betas=0.9", "actor.betas"),  # a scalar where a list is expected
        ("actor.betas=[0.9, x]", "actor.betas[1]"),
        ("data.builtin_tasks=add", "data.builtin_tasks"),
        ("data.domain_weights=[1]", "data.domain_weights"),
        ("data.domain_weights={a: heavy}", "data.domain_weights.a"),
        ("algo=3", "algo"),  # a scalar where a section is expected
        ("model.path=[a]", "model.path"),
    ],
)
def test_wrong_types_rejected(override, key):
    with pytest.raises(ConfigError) as e:
        load_config(None, [override])
    assert key in str(e.value)


@pytest.mark.parametrize(
    "override",
    ["algo.kl_estimator=k4", "algo.loss_agg_mode=token-sum", "model.dtype=float64", "rollout.engine=sglang"],
)
def test_choices_enforced(override):
    key, value = override.split("=")
    with pytest.raises(ConfigError, match=f"{key}.*{value}"):
        load_config(None, [override])


@pytest.mark.parametrize("est", ["k1", "k2", "k3"])
def test_valid_choices_accepted(est):
    assert load_config(None, [f"algo.kl_estimator={est}"]).algo.kl_estimator == est


# --------------------------------------------------------------------------- validate: impossible settings

@pytest.mark.parametrize(
    "overrides, match",
    [
        (["actor.train_batch_size=12", "actor.ppo_mini_batch_size=8"], "multiple of actor.ppo_mini_batch_size"),
        (["rollout.n=1"], "dynamic_sampling"),  # dynamic sampling is on in the preset
        (["algo.eps_low=1.0"], "eps_low"),
        (["algo.eps_low=1.5"], "eps_low"),
        (["algo.eps_high=-0.1"], "eps_high"),
        (["reward.overlong_buffer_len=16"], "overlong_buffer_len"),  # == max_response_length (16 in preset)
        (["reward.overlong_buffer_len=20"], "overlong_buffer_len"),
        (["rollout.n=0", "algo.dynamic_sampling=false"], "rollout.n"),
        (["rollout.top_p=0"], "top_p"),
        (["algo.kl_coef=-1e-4"], "kl_coef"),
        (["actor.lr=0"], "actor.lr"),
        (["actor.betas=[0.9]"], "betas"),
        (["actor.micro_batch_size=0"], "batch sizes"),
        (["actor.max_tokens_per_micro_batch=-1"], "max_tokens_per_micro_batch"),
        (["actor.logprob_chunk_tokens=-1"], "logprob_chunk_tokens"),
        (["reward.timeout_s=0"], "timeout_s"),
    ],
)
def test_impossible_settings_rejected(overrides, match):
    with pytest.raises(ConfigError, match=match):
        load_config(None, overrides)


def test_zero_mini_batch_rejected_as_config_error():
    with pytest.raises(ConfigError, match="batch sizes"):
        load_config(None, ["actor.ppo_mini_batch_size=0"])


@pytest.mark.parametrize(
    "overrides",
    [
        ["actor.train_batch_size=24", "actor.ppo_mini_batch_size=8"],
        ["rollout.n=1", "algo.dynamic_sampling=false"],
        ["algo.eps_low=0.99"],
        ["reward.overlong_buffer_len=15"],
        ["algo.kl_coef=0"],
    ],
)
def test_boundary_settings_accepted(overrides):
    load_config(None, overrides)


def test_stages_valid(tmp_path):
    p = _write(tmp_path, """
stages:
  - {name: run1, until_step: 100}
  - {name: run2, until_step: 200, reset_on_enter: true, overrides: {rollout.max_response_length: 16384, algo.eps_high: 0.28}}
  - {name: run3, overrides: {actor.lr: 1e-6}}
""")
    cfg = load_config(p)
    assert [s.name for s in cfg.stages] == ["run1", "run2", "run3"]
    assert cfg.stages[1].overrides == {"rollout.max_response_length": 16384, "algo.eps_high": 0.28}
    staged = apply_overrides(cfg, cfg.stages[1].overrides)
    assert staged.rollout.max_response_length == 16384 and staged.algo.eps_high == 0.28
    assert cfg.rollout.max_response_length == 8192  # the base config is untouched
    assert apply_overrides(cfg, cfg.stages[2].overrides).actor.lr == 1e-6


@pytest.mark.parametrize(
    "stages, match",
    [
        ("[{name: a, overrides: {algo.eps_hihg: 0.3}}]", r"stages\[0\] \(a\).*algo\.eps_high"),  # unknown key
        ("[{name: a, overrides: {rollout.n: abc}}]", r"stages\[0\].*rollout\.n"),  # wrong type
        ("[{name: a, overrides: {algo.kl_estimator: k4}}]", r"stages\[0\].*k4"),  # bad choice
        ("[{name: a, until_step: 5}, {name: b, overrides: {rollout.n: 1}}]", r"stages\[1\] \(b\).*dynamic_sampling"),
        ("[{name: a, overrides: {reward.overlong_buffer_len: 9000}}]", r"stages\[0\].*overlong"),
        ("[{name: a, overrides: {stages: []}}]", r"stages\[0\].*cannot override stages"),
        ("[{name: a, until_step: 10}, {name: b, until_step: 10}, {name: c}]", r"stages\[1\].*until_step"),
        ("[{name: a}, {name: b}]", r"stages\[0\].*until_step"),  # a non-last stage needs an end
        ("[{name: a, bogus: 1}]", r"stages\[0\]|bogus"),
    ],
)
def test_invalid_stages_rejected(stages, match):
    with pytest.raises(ConfigError, match=match):
        load_config(None, [f"stages={stages}"])


def test_stage_may_end_on_trigger_only():
    cfg = load_config(None, ["stages=[{name: a, until_trigger: true}, {name: b}]"])
    assert cfg.stages[0].until_trigger


def test_apply_overrides_copies_and_revalidates():
    cfg = load_config(None)
    new = apply_overrides(cfg, {"rollout.n": 4, "algo.eps_high": 0.3})
    assert (new.rollout.n, new.algo.eps_high) == (4, 0.3)
    assert (cfg.rollout.n, cfg.algo.eps_high) == (8, 0.4)
    with pytest.raises(ConfigError, match="algo.eps_high"):
        apply_overrides(cfg, {"algo.eps_hihg": 0.3})
    with pytest.raises(ConfigError, match="dynamic_sampling"):
        apply_overrides(cfg, {"rollout.n": 1})
    with pytest.raises(ConfigError, match="rollout.n"):
        apply_overrides(cfg, {"rollout.n": "many"})


def test_to_dict_from_dict_round_trip():
    cfg = load_config(None, ["stages=[{name: a, until_step: 3}, {name: b, overrides: {algo.eps_high: 0.3}}]"])
    assert from_dict(to_dict(cfg)) == cfg
    assert from_dict(yaml.safe_load(yaml.safe_dump(to_dict(cfg)))) == cfg  # what a checkpoint stores


# --------------------------------------------------------------------------- documentation

def test_describe_fields_documents_every_leaf():
    rows = describe_fields()
    keys = [k for k, _, _ in rows]
    assert len(keys) == len(set(keys))
    leaves = _flatten(to_dict(Config()))
    assert set(keys) == set(leaves)
    for key, default, doc in rows:
        assert isinstance(doc, str) and doc.strip(), f"{key} has no documentation"
        assert default == repr(leaves[key])
    assert ("algo.eps_high", "0.4") in [(k, d) for k, d, _ in rows]


# --------------------------------------------------------------------------- CLI (no model is loaded)

@pytest.fixture
def fake_train(monkeypatch):
    """Replace the trainer module so a config that passes is recorded instead of trained on."""
    calls = []
    mod = types.ModuleType("prorl.trainer.controller")
    mod.train = lambda cfg, **kw: calls.append((cfg, kw))
    monkeypatch.setitem(sys.modules, "prorl.trainer.controller", mod)
    return calls


def test_cli_unknown_key_exits_2(capsys, fake_train):
    from prorl.cli import main

    assert main(["train", "algo.eps_hihg=0.3"]) == 2
    err = capsys.readouterr().err
    assert "algo.eps_hihg" in err and "algo.eps_high" in err
    assert fake_train == []


@pytest.mark.parametrize("override", ["rollout.n=abc", "algo.kl_estimator=k4", "rollout.n=1"])
def test_cli_bad_values_exit_2(capsys, fake_train, override):
    from prorl.cli import main

    assert main(["train", override]) == 2
    assert override.split("=")[0].split(".")[0] in capsys.readouterr().err
    assert fake_train == []


def test_cli_passes_config_and_overrides(tmp_path, fake_train):
    from prorl.cli import main

    assert main(["train", "rollout.n=4", "algo.eps_high=0.3"]) == 0
    (cfg, kw), = fake_train
    assert cfg.rollout.n == 4 and cfg.algo.eps_high == 0.3 and cfg.actor.lr == 2e-4  # preset + overrides
    assert kw.get("resume") is False
    p = _write(tmp_path, "rollout:\n  n: 2\n")
    assert main(["train", str(p), "algo.eps_high=0.3"]) == 0
    cfg = fake_train[-1][0]
    assert cfg.rollout.n == 2 and cfg.algo.eps_high == 0.3 and cfg.actor.lr == 2e-6  # file + overrides
    assert main(["train", "--resume", "rollout.n=4"]) == 0
    cfg, kw = fake_train[-1]
    assert cfg.rollout.n == 4 and kw.get("resume") is True


def test_cli_help_config_lists_every_key(capsys):
    from prorl.cli import main

    assert main(["train", "--help-config"]) == 0
    out = capsys.readouterr().out
    for key, _, _ in describe_fields():
        assert key in out


def test_fields_have_docs_in_metadata():
    """Every non-section field (StageConfig's included) carries metadata['doc'] (what --help-config prints)."""
    import typing

    from prorl.config import StageConfig

    def walk(cls) -> int:
        n = 0
        hints = typing.get_type_hints(cls)
        for fl in dataclasses.fields(cls):
            if dataclasses.is_dataclass(hints[fl.name]):
                n += walk(hints[fl.name])
            else:
                assert str(fl.metadata.get("doc", "")).strip(), f"{cls.__name__}.{fl.name} has no doc"
                n += 1
        return n

    assert walk(Config) == len(describe_fields())
    assert walk(StageConfig) == 5


def test_unknown_builtin_task_is_rejected_with_a_suggestion():
    with pytest.raises(ConfigError, match="unknown task 'srot'.*did you mean 'sort'"):
        load_config(None, ["data.builtin_tasks=[add, srot]"])


def test_rollout_engine_choice_and_mismatch_correction_keys():
    cfg = load_config(None, ["rollout.engine=vllm", "algo.rollout_correction=mis_token", "algo.use_rollout_logprobs_as_old=true"])
    assert cfg.rollout.engine == "vllm" and cfg.algo.rollout_correction == "mis_token"
    assert (cfg.algo.rollout_corr_low, cfg.algo.rollout_corr_high) == (0.5, 5.0)  # ICE-POP's range
    with pytest.raises(ConfigError, match="rollout.engine: 'sglang' is not one of hf, vllm"):
        load_config(None, ["rollout.engine=sglang"])
    with pytest.raises(ConfigError, match="algo.rollout_correction: 'ppo' is not one of"):
        load_config(None, ["rollout.engine=vllm", "algo.rollout_correction=ppo"])
    for ok in (["algo.rollout_correction=tis"], ["algo.use_rollout_logprobs_as_old=true"]):  # hf reports them too
        load_config(None, ok)
    with pytest.raises(ConfigError, match="rollout_corr_low must be >= 0 and < algo.rollout_corr_high"):
        load_config(None, ["rollout.engine=vllm", "algo.rollout_corr_low=2", "algo.rollout_corr_high=1"])
