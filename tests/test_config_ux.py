"""Config edge UX: `_base_` resolution (file-relative, then shipped presets), "did you mean" for preset typos,
`rlq presets --keys` generated from the RunSpec dataclasses, the shipped SynthCC presets' base order."""

from __future__ import annotations

import dataclasses

import pytest

from cli_helpers import run_cli
from rlq.config import PACKAGE_CONFIGS, load_config, load_yaml_with_bases, resolve_config_path, schema_keys
from rlq.errors import ConfigError
from rlq.spec import RunSpec


def test_base_resolves_relative_to_the_file_first(tmp_path):
    # A local file with the same relative name as a shipped preset wins over the shipped one.
    (tmp_path / "synthcc").mkdir()
    (tmp_path / "synthcc" / "bm.yaml").write_text("method: cap\noutput: runs/local\n")
    (tmp_path / "mine.yaml").write_text("_base_: [synthcc/bm.yaml]\ntrain:\n  epochs: 3\n")
    cfg = load_yaml_with_bases(tmp_path / "mine.yaml")
    assert cfg.method == "cap" and cfg.output == "runs/local" and cfg.train.epochs == 3


@pytest.mark.parametrize("base", ["synthcc/bm.yaml", "configs/synthcc/bm.yaml"])
def test_base_can_name_a_shipped_preset(tmp_path, base):
    (tmp_path / "mine.yaml").write_text(f"_base_: [{base}]\noutput: runs/mine\ntrain:\n  epochs: 3\n")
    cfg = load_config(tmp_path / "mine.yaml", schema=RunSpec)
    shipped = load_config(PACKAGE_CONFIGS / "synthcc" / "bm.yaml", schema=RunSpec)
    assert cfg.output == "runs/mine" and cfg.train.epochs == 3
    # Everything else comes from the shipped preset (and its own bases).
    assert cfg.model.backbone == shipped.model.backbone == "mobilenetv2" and cfg.data.height == shipped.data.height == 128
    assert cfg.method == "bm"


def test_missing_base_lists_where_it_looked(tmp_path):
    (tmp_path / "mine.yaml").write_text("_base_: [synthcc/bmm.yaml]\n")
    with pytest.raises(ConfigError) as e:
        load_yaml_with_bases(tmp_path / "mine.yaml")
    msg = str(e.value)
    assert str(tmp_path / "synthcc" / "bmm.yaml") in msg  # relative to the file
    assert str(PACKAGE_CONFIGS / "synthcc" / "bmm.yaml") in msg  # the shipped presets
    assert "configs/synthcc/bm.yaml" in msg  # the closest shipped preset


def test_preset_typo_suggests_five_closest():
    with pytest.raises(ConfigError) as e:
        resolve_config_path("configs/ltcc/rlq_oficial.yaml")
    msg = str(e.value)
    suggested = msg.split("Did you mean: ")[1].split("?")[0].split(", ")
    assert len(suggested) == 5 and suggested[0] == "configs/ltcc/rlq_official.yaml"
    assert "configs/prcc/cal.yaml" not in msg  # not the full list


def test_shipped_synthcc_presets_keep_the_synthcc_external_root():
    """The method file comes before `_demo.yaml` in `_base_`, so SynthCC's paths win over the Celeb-reID defaults."""
    for m in ("tad", "rlq"):
        cfg = load_config(f"configs/synthcc/{m}.yaml", schema=RunSpec)
        assert cfg.method == m
        assert cfg.tad.external_root == "data/synthcc/external" and cfg.tad.teacher == "runs/synthcc-teacher"
    t = load_config("configs/teacher/synthcc.yaml", schema=RunSpec)
    assert t.role == "teacher" and t.data.root == "data/synthcc/external" and t.model.backbone == "mobilenetv2"


def test_schema_keys_cover_every_field_with_its_default():
    rows = {r["key"]: r for r in schema_keys(RunSpec)}
    spec = RunSpec()
    n_leaf = 0
    for section in dataclasses.fields(RunSpec):
        value = getattr(spec, section.name)
        if dataclasses.is_dataclass(value):
            for f in dataclasses.fields(value):
                n_leaf += 1
                assert rows[f"{section.name}.{f.name}"]["default"] == getattr(value, f.name)
        else:
            n_leaf += 1
            assert rows[section.name]["default"] == value
    assert len(rows) == n_leaf
    assert rows["data.height"]["type"] == "int" and "§2.1" in rows["data.height"]["help"]


def test_presets_keys_cli_and_key_typo_hint(capsys):
    assert run_cli(["presets", "--keys", "train.ep"]) == 0
    text = capsys.readouterr().out
    assert "train.epochs" in text and "200" in text and "data.root" not in text
    assert run_cli(["train", "--config", "configs/ltcc/bm.yaml", "train.epoch=3", "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "rlq presets --keys" in err
    assert run_cli(["presets", "--keys", "no_such_key"]) != 0
