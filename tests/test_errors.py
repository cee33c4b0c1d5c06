"""A user's mistake prints one `error:` line and exits 2; the model fits the data (model=auto) or is refused early."""

from __future__ import annotations

import logging
import subprocess
import sys

import pytest
import yaml
from conftest import CONF, REPO, compose_config, read_metrics, run_main, run_task
from hydra.errors import InstantiationException

from tagretrieval.runtime import preflight
from tagretrieval.data.inputs import AUDIO, CF, FEATURES
from tagretrieval.runtime.errors import ConfigError, DataError, UserError
from tagretrieval.models.choice import MODELS, auto_model


def error_lines(done) -> list[str]:
    return [line for line in done.stderr.splitlines() if line.startswith("error:")]


def assert_one_error(done, *fragments: str) -> str:
    assert done.returncode == 2, (done.returncode, done.stderr[-3000:])
    assert "Traceback" not in done.stderr, done.stderr
    lines = error_lines(done)
    assert len(lines) == 1, done.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


@pytest.mark.parametrize("args, fragments", [
    (["data=folder"], ["required setting(s) not given: data.root=... (the dataset folder)"]),
    (["mode=trian"], ["unknown mode='trian'", "train, test, prepare"]),
    (["mode=retrieve", "query=piano"], ["mode=retrieve needs ckpt_path=PATH"]),
    (["mode=test", "ckpt_path=nope/best.ckpt"], ["checkpoint not found: ckpt_path=nope/best.ckpt"]),
    (["mode=tag", "ckpt_path=x.ckpt"], ["mode=tag: give tracks=VALUE"]),
])
def test_config_mistakes_are_one_line_before_the_heavy_imports(tmp_path, args, fragments):
    done = run_main([*args, f"hydra.run.dir={tmp_path}"])
    assert_one_error(done, *fragments)
    assert not (tmp_path / "checkpoints").exists()


def test_the_traceback_is_there_on_request(tmp_path, monkeypatch):
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")  # run_main passes the environment on
    done = run_main(["data=folder", f"hydra.run.dir={tmp_path}"])
    assert done.returncode == 1 and "Traceback" in done.stderr and "ConfigError" in done.stderr


def test_a_data_file_mistake_is_one_line(tmp_path):
    root = tmp_path / "mydata"
    (root / "audio").mkdir(parents=True)
    (root / "tags.csv").write_text("id,tags\nt00,rock\n")
    done = run_main(["data=folder", f"data.root={root}", f"hydra.run.dir={tmp_path / 'run'}"])
    assert_one_error(done, "tags.csv: no 'track_id' column (columns: ['id', 'tags'])")


def test_an_unexpected_error_keeps_its_traceback(tmp_path):
    # main.py as typed, with the task layer replaced by one that has a bug
    code = ("import runpy, sys; import tagretrieval.tasks as tasks\n"
            "def run(*args, **kwargs): raise RuntimeError('a bug of ours')\n"
            f"tasks.run = run; sys.argv = ['main.py', 'hydra.run.dir={tmp_path}']\n"
            f"runpy.run_path({str(REPO / 'main.py')!r}, run_name='__main__')")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600, cwd=REPO)
    assert done.returncode == 1 and "Traceback" in done.stderr and "RuntimeError: a bug of ours" in done.stderr
    assert not error_lines(done)


def test_user_errors_are_found_behind_hydra_instantiate():
    try:
        try:
            raise DataError("bad file")
        except DataError as cause:
            raise InstantiationException("Error in call to target 'x'") from cause
    except InstantiationException as wrapped:
        assert str(preflight.user_error(wrapped)) == "bad file"
    assert preflight.user_error(RuntimeError("a bug")) is None
    assert issubclass(ConfigError, ValueError) and issubclass(DataError, ValueError)  # old except clauses still work
    assert preflight.one_line(UserError("first\n  second")) == "error: first; second"


# -- which model: model=auto, an explicit model=, and a refusal before the import -------------------------------
def test_the_model_table_is_conf_model():
    configs = {p.stem: yaml.safe_load(p.read_text()) for p in (CONF / "model").glob("*.yaml")}
    assert {name: c["_target_"] for name, c in configs.items() if name != "auto"} == MODELS
    assert set(configs["auto"]["defaults"]) >= {f"{name}@choices.{name}" for name in ("hybrid", "acoustic")}


@pytest.mark.parametrize("inputs, expected", [
    ({AUDIO, CF}, "hybrid"), ({AUDIO}, "acoustic"), ({CF}, "cultural"), ({FEATURES}, "features"), (set(), None),
])
def test_auto_picks_the_model_that_reads_what_the_data_holds(inputs, expected):
    assert auto_model(inputs) == expected


def test_auto_applies_the_experiment_to_the_chosen_model(tmp_path):
    from tagretrieval.tasks import model_config

    cfg = compose_config(["experiment=smoke"], tmp_path)
    name, node, shared = model_config(cfg, frozenset({AUDIO}), dataset="'x'")
    assert name == "acoustic" and node._target_ == MODELS["acoustic"]
    assert shared == {"embedding_dim": 32, "hidden_dim": 64}  # experiment=smoke's model keys


@pytest.mark.parametrize("data, model, fragments", [
    (["data=fma", "data.input=features"], "acoustic",
     ["model=acoustic needs audio", "dataset 'fma' holds precomputed song features", "use model=features"]),
    (["data=fma", "data.input=audio"], "hybrid", ["model=hybrid needs CF vectors", "use model=acoustic"]),
    (["data=minimusicnet"], "cultural", ["model=cultural needs CF vectors", "use model=features"]),
    (["data=folder"], "hybrid", ["model=hybrid needs CF vectors", "holds audio: use model=acoustic"]),
])
def test_a_model_the_data_cannot_feed_is_refused_before_the_import(tmp_path, data, model, fragments):
    root = tmp_path / "root"
    root.mkdir()
    with pytest.raises(ConfigError) as error:
        run_task([*data, f"data.root={root}", f"model={model}", "progress=false"], tmp_path / "run")
    for fragment in fragments:
        assert fragment in str(error.value)
    assert list(root.iterdir()) == []  # nothing imported, nothing read


def test_main_refuses_the_wrong_model_in_one_line(tmp_path):
    done = run_main(["data=fma", f"data.root={tmp_path}", "model=hybrid", f"hydra.run.dir={tmp_path / 'run'}"])
    assert_one_error(done, "model=hybrid needs audio and CF vectors", "use model=features")
    assert not (tmp_path / "prepared").exists()


# -- what mode=train tests without a best checkpoint --------------------------------------------------------------
def test_training_without_a_best_checkpoint_says_it_tests_the_last_weights(tmp_path, smoke_overrides, caplog):
    with caplog.at_level(logging.WARNING, logger="tagretrieval.tasks"):
        run_task([*smoke_overrides, "~callbacks", "trainer.max_epochs=1"], tmp_path)
    assert any("no best checkpoint" in r.message and "weights at the end of training" in r.message
               for r in caplog.records)
    assert read_metrics(tmp_path)["n_songs"] > 0
