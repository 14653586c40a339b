import pytest

from device.config import DeviceConfig, check_geometry, load_config, parse_config
from device.errors import ConfigError


def test_empty_file_gives_the_defaults():
    assert parse_config("") == DeviceConfig()


def test_unknown_key_is_refused_with_its_line_and_path():
    text = "device:\n  id: a\nline:\n  gates:\n    - id: 1\n      distance_mm: 300\n      colour: red\n"
    with pytest.raises(ConfigError, match=r"x.yaml:7: line\.gates\.0\.colour: unknown key"):
        parse_config(text, "x.yaml")


def test_bad_value_names_the_key_and_the_reason():
    with pytest.raises(ConfigError, match=r"c.yaml:2: bridge\.baud: Input should be greater than or equal"):
        parse_config("bridge:\n  baud: 10\n", "c.yaml")


def test_grade_mapped_to_a_missing_gate_is_refused():
    with pytest.raises(ConfigError, match=r"gate 9 is not in line\.gates"):
        parse_config("sorting:\n  grade_to_gate: {M: 9}\n")


def test_gate_before_the_decision_line_is_refused():
    with pytest.raises(ConfigError, match="not past the decision line"):
        parse_config(
            "line:\n  decision_line_mm: 500\n  gates: [{id: 1, distance_mm: 300}]\nsorting:\n  grade_to_gate: {}\n"
        )


def test_not_yaml_and_not_a_mapping():
    with pytest.raises(ConfigError, match="not valid YAML"):
        parse_config("a: [1, 2\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        parse_config("- 1\n- 2\n")


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(tmp_path / "nope.yaml")


def test_geometry_check_refuses_a_line_too_short_for_the_decision_latency():
    cfg = parse_config("line:\n  max_belt_speed_mps: 1.5\n  decision_line_mm: 120\n  margin_ms: 15\n")
    budget = cfg.decision_budget_ms()  # (400 - 120) mm / 1.5 m/s - 15 ms
    assert budget == pytest.approx(280 / 1.5 - 15)
    check_geometry(cfg, budget - 1)
    with pytest.raises(ConfigError, match="line geometry cannot be met"):
        check_geometry(cfg, budget + 1)
