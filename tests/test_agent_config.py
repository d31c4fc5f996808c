"""The agent's configuration: shipped examples validate; mistakes name the file, the line and the field."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from edge_agent.config import load_config
from edgeproof.configfile import ConfigError

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "edgeproof" / "demo_plant"


@pytest.mark.parametrize("phase", ["baseline", "post"])
def test_shipped_demo_configs_validate_and_match_configs_folder(phase: str) -> None:
    packaged = DEMO / f"agent-{phase}.yaml"
    config = load_config(packaged)
    assert len(config.machines) == 10
    assert (ROOT / "configs" / f"demo-agent-{phase}.yaml").read_text(encoding="utf-8") == packaged.read_text(
        encoding="utf-8"
    )


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "agent.yaml"
    path.write_text(text, encoding="utf-8")
    return path


BASE = """\
agent:
  id: a1
site:
  firm: {name: F}
  name: S
processes:
  - {id: turning, name: Turning, key: true}
machines:
  - id: M1
    name: Lathe
    type: cnc_lathe
    process: turning
    digital: true
    device: d1
    state_rules: r
devices:
  - id: d1
    protocol: modbus
    host: 127.0.0.1
    tags:
      - {name: run, area: holding, address: 0}
state_rules:
  r:
    - {state: RUNNING, when: {all: [{tag: run, value: 1}]}}
"""


def test_valid_minimal_config_loads(tmp_path: Path) -> None:
    cfg = load_config(_write(tmp_path, BASE))
    assert cfg.machines[0].device == "d1"
    assert cfg.devices[0].port == 502


def test_type_error_names_file_line_and_field(tmp_path: Path) -> None:
    path = _write(tmp_path, BASE.replace("address: 0", "address: -3"))
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert str(e.value).startswith(f"{path}:21: devices[0].tags[0].address:")
    assert "greater than or equal to 0" in str(e.value)


def test_an_impossible_date_names_file_and_line(tmp_path: Path) -> None:
    path = _write(tmp_path, BASE + "calendar:\n  holidays: [2026-13-03]\n")
    with pytest.raises(ConfigError) as e:
        load_config(path)
    line = BASE.count("\n") + 2
    assert str(e.value).startswith(f"{path}:{line}: '2026-13-03' is not a valid value: month must be in 1..12")


def test_dangling_reference_names_the_referring_line(tmp_path: Path) -> None:
    path = _write(tmp_path, BASE.replace("process: turning", "process: milling"))
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert str(e.value) == f"{path}:12: machines[0].process: 'milling' is not in processes"


def test_rule_using_a_missing_tag_is_refused(tmp_path: Path) -> None:
    path = _write(tmp_path, BASE.replace("{tag: run, value: 1}", "{tag: spindle, value: 1}"))
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert str(e.value) == f"{path}:14: machines[0].device: device 'd1' has no tag spindle"


def test_unknown_key_and_bad_yaml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as e:
        load_config(_write(tmp_path, BASE + "colour: blue\n"))
    assert ":25: colour: Extra inputs are not permitted" in str(e.value)
    with pytest.raises(ConfigError) as e:
        load_config(_write(tmp_path, "agent: [unclosed\n"))
    assert "invalid YAML" in str(e.value)


def test_environment_variables_fill_values(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MQTT_PASSWORD", "s3cret")
    cfg = load_config(_write(tmp_path, BASE + "mqtt:\n  username: u\n  password: ${MQTT_PASSWORD}\n"))
    assert cfg.mqtt.password is not None and cfg.mqtt.password.get_secret_value() == "s3cret"
    assert "s3cret" not in repr(cfg.mqtt)
    with pytest.raises(ConfigError) as e:
        load_config(_write(tmp_path, BASE + "mqtt:\n  host: ${NO_SUCH_VARIABLE_X}\n"))
    assert "environment variable NO_SUCH_VARIABLE_X is not set" in str(e.value)


def test_agent_cli_exits_2_with_the_error(tmp_path: Path) -> None:
    path = _write(tmp_path, BASE.replace("digital: true", "digital: maybe"))
    proc = subprocess.run(
        [sys.executable, "-m", "edge_agent", "--config", str(path), "--check"], capture_output=True, text=True
    )
    assert proc.returncode == 2
    assert f"{path}:13: machines[0].digital: Input should be a valid boolean" in proc.stderr


def test_devices_sharing_a_link_must_agree_on_its_settings(tmp_path: Path) -> None:
    second = (
        "  - id: d2\n    protocol: modbus\n    host: 127.0.0.1\n    unit: 2\n    timeout_s: 3\n"
        "    tags:\n      - {name: run, area: holding, address: 0}\n"
    )
    path = _write(tmp_path, BASE.replace("state_rules:\n  r:", second + "state_rules:\n  r:"))
    with pytest.raises(ConfigError) as e:
        load_config(path)
    expected = "devices[1].timeout_s: d2 shares link 127.0.0.1:502 with d1, whose timeout_s is 1.0"
    assert str(e.value) == f"{path}:26: {expected}"


METERED = BASE.replace(
    "    state_rules: r\n", "    state_rules: r\n    counters: {energy: meter_wh, energy_scale: 0.001}\n", 1
)


def test_energy_meter_tag_must_be_a_tag_of_the_machines_device(tmp_path: Path) -> None:
    path = _write(tmp_path, METERED)
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert str(e.value) == f"{path}:16: machines[0].counters.energy: device 'd1' has no tag meter_wh"
    tag = "      - {name: run, area: holding, address: 0}\n"
    config = load_config(
        _write(tmp_path, METERED.replace(tag, tag + tag.replace("run", "meter_wh").replace("0}", "9}")))
    )
    assert (config.machines[0].counters.energy, config.machines[0].counters.energy_scale) == ("meter_wh", 0.001)


def test_energy_meter_needs_a_device_and_a_positive_scale(tmp_path: Path) -> None:
    path = _write(tmp_path, METERED.replace("    device: d1\n", ""))
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert str(e.value) == f"{path}:15: machines[0].counters.energy: a meter needs the machine's device"
    path = _write(tmp_path, METERED.replace("energy_scale: 0.001", "energy_scale: 0"))
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert str(e.value) == f"{path}:16: machines[0].counters.energy_scale: Input should be greater than 0"


def test_a_machine_without_meter_dumps_as_before_meters_existed(tmp_path: Path) -> None:
    """The configuration fingerprint of event logs recorded before meters existed still matches."""
    config = load_config(
        _write(tmp_path, BASE.replace("    state_rules: r\n", "    state_rules: r\n    counters: {parts: run}\n"))
    )
    assert config.model_dump(mode="json")["machines"][0]["counters"] == {"parts": "run", "scrap": None, "bits": 32}
