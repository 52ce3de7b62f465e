"""Bad config values are refused before any work starts (issue 18): every choice field, every number's range
(F5: zero, negative, NaN, inf) and YAML alias bombs (F10), checked where the spec is built (`load_run_spec`, which
`rlq train --dry-run` also runs). The walks go over the whole RunSpec schema, so a field added later is covered too."""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path

import pytest
import yaml

from cli_helpers import run_cli
from rlq.cli.train import load_run_spec
from rlq.errors import ConfigError
from rlq.spec import RunSpec, field_choices

#: str fields whose values are open: paths, CSV column names, an informational label. Each is used as given and
#: checked where it is read (a missing file is an error naming the key), not against a list.
FREE_TEXT = {
    "preset",  # informational label (official | paper | default | teacher ...), never branched on
    "output",  # run folder
    "data.root",
    "data.parsing_root",
    "data.faulty_pant",
    "data.faulty_shirt",
    "data.gender_csv",
    "data.pose_csv",
    "data.pose_column",  # a column of the pose CSV (R_LA_15, N_A_10, ...), checked against the file's header
    "model.pretrained",  # imagenet | none | PATH of a weights file
    "tad.teacher",
    "tad.external_root",
    "eval.quality_csv",
}

#: Numeric fields where NaN, inf or -1 is a legitimate value: none so far (every count, weight, rate and seed is
#: finite and >= 0; "off" is spelled 0 or null, never -1).
NUMERIC_ALLOWS: dict[str, set[str]] = {}


def _leaves(cls: type = RunSpec, prefix: str = "") -> list[tuple[str, dataclasses.Field, typing.Any]]:
    """(dotted key, field, resolved type) of every leaf field of the schema."""
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        t = hints[f.name]
        if dataclasses.is_dataclass(t):
            out += _leaves(t, f"{prefix}{f.name}.")
        else:
            out.append((prefix + f.name, f, t))
    return out


def _base(t: typing.Any) -> typing.Any:
    """``X | None`` (or ``Optional[X]``) -> X."""
    args = [a for a in typing.get_args(t) if a is not type(None)]
    return args[0] if typing.get_origin(t) in (typing.Union, types.UnionType) and len(args) == 1 else t


STR_FIELDS = [(k, f) for k, f, t in _leaves() if _base(t) is str]
CHOICE_FIELDS = [(k, f) for k, f, _ in _leaves() if field_choices(f) is not None]
NUMERIC_FIELDS = [(k, f, _base(t)) for k, f, t in _leaves()
                  if _base(t) in (int, float) or typing.get_origin(_base(t)) is list]


def _refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, key: str, value: str) -> str:
    """load_run_spec with ``key=value`` (on valid defaults) must raise ConfigError and write nothing; its message."""
    work = tmp_path / "work"
    work.mkdir(exist_ok=True)
    monkeypatch.chdir(work)
    out = tmp_path / "run"
    with pytest.raises(ConfigError) as e:
        load_run_spec(None, ["data.root=data/x", f"output={out}", f"{key}={value}"])
    assert not out.exists() and list(work.iterdir()) == []
    return str(e.value)


def test_every_str_field_is_a_choice_or_declared_free_text():
    """A new str field must either declare its choices (or a pattern) in engine/spec.py or be listed in FREE_TEXT."""
    unaccounted = [k for k, f in STR_FIELDS if field_choices(f) is None and "pattern" not in f.metadata and k not in FREE_TEXT]
    assert unaccounted == []
    stale = FREE_TEXT - {k for k, _ in STR_FIELDS}
    assert stale == set()
    assert not [k for k, f in STR_FIELDS if k in FREE_TEXT and (field_choices(f) or "pattern" in f.metadata)]


def test_defaults_are_allowed_values():
    from rlq.spec import value_problems

    assert value_problems(RunSpec()) == []
    for key, f in CHOICE_FIELDS:
        assert f.default in field_choices(f), key


@pytest.mark.parametrize("key,f", CHOICE_FIELDS + [(k, f) for k, f in STR_FIELDS if "pattern" in f.metadata],
                         ids=lambda x: x if isinstance(x, str) else None)
def test_a_bogus_choice_is_refused_naming_field_value_and_choices(tmp_path, monkeypatch, key, f):
    choices = field_choices(f)
    bogus = "bogus" if isinstance(f.default, str) else str(max(choices) + 1)
    msg = _refused(tmp_path, monkeypatch, key, bogus)
    assert f"{key}=" in msg and bogus in msg
    for c in choices or ():
        assert str(c) in msg


def test_closest_choice_is_suggested(tmp_path, monkeypatch):
    msg = _refused(tmp_path, monkeypatch, "model.split", "layer9")
    assert "model.split='layer9': choose one of disjoint, layer1, layer2, layer3 (closest: layer3" in msg


@pytest.mark.parametrize("key,f,t", NUMERIC_FIELDS, ids=lambda x: x if isinstance(x, str) else None)
def test_every_number_is_finite_and_in_range(tmp_path, monkeypatch, key, f, t):
    """NaN, inf and -1 on every numeric field (a list gets them as its entry) are refused naming the key."""
    assert "range" in f.metadata or field_choices(f) is not None, f"{key}: declare its range in engine/spec.py"
    for bad in ("nan", "inf", "-inf", "-1"):
        if bad in NUMERIC_ALLOWS.get(key, set()):
            continue
        value = f"[{bad}]" if typing.get_origin(t) is list else bad
        assert key in _refused(tmp_path, monkeypatch, key, value), (key, bad)


@pytest.mark.parametrize("override", [
    "train.eval_every=0",  # was ZeroDivisionError after an epoch
    "train.ckpt_every_epochs=0",  # likewise
    "train.log_every=0",
    "data.num_instances=0",
    "data.batch_size=0",
    "optim.lr=nan",
    "optim.lr=-1",
    "train.max_steps_per_epoch=-1",  # trained 0 steps and exited 0
    "tad.external_batch_size=0",
    "loss.label_smooth=1.0",
    "optim.milestones=[20,-40]",
    "train.device=gpu",
    "data.dataset=market1501",
    "train.amp=bf17",
])
def test_f5_bad_numbers_refused_by_dry_run(tmp_path, monkeypatch, capsys, override):
    monkeypatch.chdir(tmp_path)
    rc = run_cli(["train", "--config", "configs/synthcc/bm.yaml", f"output={tmp_path / 'run'}", override, "--dry-run"])
    err = capsys.readouterr().err
    assert rc == 2 and override.split("=")[0] + "=" in err
    assert list(tmp_path.iterdir()) == []


def test_dataset_names_ignore_case_and_separators():
    spec = load_run_spec(None, ["data.root=x", "data.dataset=SynthCC", "tad.external_dataset=Celeb-reID"])
    assert spec.data.dataset == "SynthCC"
    with pytest.raises(ConfigError, match="tad.external_dataset='identity-folders'.*closest: identity_folders"):
        load_run_spec(None, ["data.root=x", "tad.external_dataset=identity-folders"])


def test_the_issue_command_names_every_bad_field(tmp_path, monkeypatch, capsys):
    """All bad values are reported at once, in one line, and nothing is written."""
    monkeypatch.chdir(tmp_path)
    bad = {"tad.variant": "bogus", "tad.alternation": "sometimes", "model.split": "layer9", "loss.kl_weighting": "whatever",
           "model.backbone": "resnet9000", "train.nonfinite": "ignore"}
    rc = run_cli(["train", "--config", "configs/synthcc/rlq.yaml", *(f"{k}={v}" for k, v in bad.items()), "--dry-run"])
    err = capsys.readouterr().err
    assert rc == 2
    for k, v in bad.items():
        assert f"{k}={v!r}: choose one of" in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []


def test_choice_sets_are_the_consumers_own():
    """The schema's sets are the tuples the consuming code checks against (one definition each)."""
    from rlq.data.samplers import FRACTION_BY
    from rlq.losses.divergence import KL_WEIGHTINGS
    from rlq.methods.tad import TAD_VARIANTS
    from rlq.models import SPLITS
    from rlq.models.backbones import BACKBONES
    from rlq.runtime.device import AMP_DTYPES, AMP_MODES
    from rlq.spec import LossSpec, ModelSpec, TADSpec, TrainSpec

    fields = {f.name: f for cls in (ModelSpec, LossSpec, TADSpec, TrainSpec) for f in dataclasses.fields(cls)}
    assert field_choices(fields["backbone"]) == BACKBONES and field_choices(fields["split"]) == SPLITS
    assert field_choices(fields["variant"]) == TAD_VARIANTS and field_choices(fields["fraction_by"]) == FRACTION_BY
    assert field_choices(fields["amp"]) == ("auto", *AMP_DTYPES) == AMP_MODES
    assert field_choices(dataclasses.fields(RunSpec)[0]) == ("cal", "bm", "bm+g", "bm+p", "cap", "tad", "rlq")
    assert field_choices(fields["kl_weighting"]) == KL_WEIGHTINGS


# -- F10: YAML alias bombs ------------------------------------------------------------------------------------------
def _bomb(levels: int = 7) -> str:
    """The 7-line billion-laughs file: 9 ** 7 (4.8 million) strings once expanded."""
    lines = ['a: &a ["x","x","x","x","x","x","x","x","x"]']
    for prev, name in zip("abcdefg", "bcdefg"[: levels - 1]):
        lines.append(f"{name}: &{name} [{','.join(['*' + prev] * 9)}]")
    return "\n".join(lines) + "\n"


def test_yaml_alias_bomb_config_is_refused(tmp_path, capsys):
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(_bomb())
    assert len(bomb.read_text().splitlines()) == 7
    with pytest.raises(ConfigError, match=r"bomb\.yaml: its YAML aliases .* expand to .*write the repeated values out"):
        load_run_spec(str(bomb), [])
    assert run_cli(["train", "--config", str(bomb), "--dry-run"]) == 2
    assert "bomb.yaml" in capsys.readouterr().err
    rec = tmp_path / "rec.yaml"
    rec.write_text("x: &r [1, *r]\n")
    with pytest.raises(ConfigError, match="rec.yaml: a YAML alias"):
        load_run_spec(str(rec), [])


def test_yaml_alias_bomb_manifest_protocol_is_refused(tmp_path):
    from rlq.data.datasets.manifest import _read_protocol

    p = tmp_path / "m.protocol.yaml"
    p.write_text(_bomb())
    with pytest.raises(ConfigError, match=r"m\.protocol\.yaml: its YAML aliases"):
        _read_protocol(p)


def test_modest_aliases_still_load(tmp_path):
    """Anchors and aliases that do not blow up stay allowed (a few repeated values)."""
    from rlq.safe_yaml import load_yaml

    cfg = tmp_path / "a.yaml"
    cfg.write_text(f"_base_: [synthcc/bm.yaml]\noutput: {tmp_path / 'r'}\ndata:\n  batch_size: &b 16\n"
                   "tad:\n  external_batch_size: *b\n")
    spec = load_run_spec(str(cfg), [])
    assert spec.data.batch_size == spec.tad.external_batch_size == 16
    assert load_yaml(_bomb(3), "x") == yaml.safe_load(_bomb(3))  # 729 values: allowed, same result as safe_load


def test_yaml_alias_bomb_in_one_override_is_refused(tmp_path):
    """An override's value is parsed as YAML too (by OmegaConf, whose loader refuses anchors in a value): the same
    bomb on one line is refused at once, naming the override."""
    flow = "[" + ", ".join(f"&{n} [{','.join(['*' + p] * 9)}]" for p, n in zip("abcdef", "bcdefg")) + "]"
    value = '[&a ["x","x","x","x","x","x","x","x","x"], ' + flow[1:]
    with pytest.raises(ConfigError, match=r"override 'data.root=\[&a .*not valid YAML"):
        load_run_spec(None, [f"data.root={value}", f"output={tmp_path / 'r'}"])
