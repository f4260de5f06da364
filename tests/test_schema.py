"""config.schema.yaml: a valid draft 2020-12 schema that agrees with the launcher's own checks.

For every good config both accept; for every bad one both refuse, except the
few corpus entries marked `schema: accepts`, which only evaluating the
templates can catch. A document that is not valid YAML (syntax errors,
duplicate keys) never reaches a schema: the parser refuses it, as the
launcher's does.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from remote_http_launcher import config as config_module
from remote_http_launcher.config import evaluate_command, evaluate_key, load_config
from remote_http_launcher.errors import ConfigError
from tests.test_config import BAD, GOOD, check_runtime, parsed

ROOT = Path(__file__).resolve().parent.parent
SCHEMA: dict[str, Any] = yaml.safe_load((ROOT / "config.schema.yaml").read_text(encoding="utf-8"))
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))


def schema_errors(data: Any) -> list[str]:
    return [f"{'/'.join(map(str, error.absolute_path)) or '(root)'}: {error.message}"
            for error in VALIDATOR.iter_errors(data)]


def test_schema_is_a_valid_draft_2020_12_schema() -> None:
    assert SCHEMA["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(SCHEMA)


def test_schema_patterns_are_the_runtime_patterns() -> None:
    properties, defs = SCHEMA["properties"], SCHEMA["$defs"]
    assert defs["host"]["pattern"] == config_module.HOST_PATTERN
    assert properties["ssh_hostname"]["pattern"] == config_module.SSH_HOST_PATTERN
    assert properties["conda"]["pattern"] == config_module.CONDA_PATTERN
    assert properties["workdir"]["pattern"] == config_module.WORKDIR_PATTERN
    assert defs["one_line"]["not"]["pattern"] == config_module.CONTROL_PATTERN
    assert defs["handshake_path"]["not"]["pattern"] == config_module.HANDSHAKE_REFUSED_PATTERN


def test_schema_fields_are_the_launcher_fields() -> None:
    """A field the launcher reads but does not list would be warned about as unused (or refused as a typo)."""
    assert set(SCHEMA["properties"]) == set(config_module.FIELDS)


def test_schema_limits_and_defaults_are_the_runtime_ones() -> None:
    properties, defs = SCHEMA["properties"], SCHEMA["$defs"]
    assert SCHEMA["required"] == list(config_module.REQUIRED_FIELDS)
    assert properties["workdir"]["maxLength"] == config_module.MAX_PATH
    assert properties["key"]["maxLength"] == config_module.MAX_KEY_TEMPLATE
    assert properties["command"]["maxLength"] == config_module.MAX_COMMAND_TEMPLATE
    assert SCHEMA["propertyNames"]["maxLength"] == config_module.MAX_FIELD_NAME
    assert defs["handshake_path"]["maxLength"] == config_module.MAX_HANDSHAKE_PATH
    assert defs["seconds"]["maximum"] == config_module.MAX_TIMEOUT
    assert properties["network_interface"]["default"] == config_module.DEFAULT_NETWORK_INTERFACE
    assert properties["tunnel"]["default"] is False
    assert properties["startup_timeout"]["default"] == config_module.DEFAULT_STARTUP_TIMEOUT
    assert properties["watchdog_interval"]["default"] == config_module.DEFAULT_WATCHDOG_INTERVAL
    assert (properties["port_start"]["default"], properties["port_end"]["default"]) == config_module.DEFAULT_PORT_RANGE
    assert properties["url_pattern"]["maxLength"] == config_module.MAX_URL_PATTERN
    assert properties["local_port"]["maximum"] == config_module.MAX_PORT
    scheduler = properties["scheduler"]["properties"]
    assert scheduler["type"]["enum"] == list(config_module.SCHEDULER_TYPES)
    rules = {rule["if"]["properties"]["type"]["const"]: rule["then"]["properties"]["options"]["items"]
             for rule in properties["scheduler"]["allOf"]}
    assert set(rules) == set(config_module.SCHEDULER_TYPES)
    for kind, items in rules.items():
        options = config_module.SCHEDULER_OPTIONS[kind]
        assert items["pattern"] == options.word
        for flag in options.reserved:  # the schema refuses each flag the launcher refuses
            scheduler_config = {"workdir": "/w", "key": "k", "command": "c",
                                "scheduler": {"type": kind, "options": [f"{flag}=x" if flag[1] == "-" else flag]}}
            assert schema_errors(scheduler_config), flag
    assert scheduler["options"]["maxItems"] == config_module.MAX_SCHEDULER_OPTIONS
    assert scheduler["queue_timeout"]["default"] == config_module.DEFAULT_QUEUE_TIMEOUT
    [loopback] = [rule["then"] for rule in SCHEMA["allOf"] if "scheduler" in rule["if"]["properties"]]
    names, addresses = loopback["properties"]["network_interface"]["not"]["anyOf"]
    assert names["enum"] == list(config_module.LOOPBACK_INTERFACES)
    assert addresses["pattern"] == "^" + config_module.LOOPBACK_PREFIX.replace(".", "[.]")
    for name, spec in properties.items():
        assert spec.get("description"), name


@pytest.mark.parametrize("path", EXAMPLES, ids=[path.name for path in EXAMPLES])
def test_examples_pass_schema_and_launcher(path: Path) -> None:
    assert schema_errors(yaml.safe_load(path.read_text(encoding="utf-8"))) == []
    config = load_config(path)
    evaluate_command(config, evaluate_key(config), "/state/x.json")


@pytest.mark.parametrize("entry", GOOD, ids=[entry["id"] for entry in GOOD])
def test_good_config_passes_schema_and_launcher(entry: dict[str, Any]) -> None:
    data = parsed(entry)
    assert schema_errors(data) == []
    check_runtime(data)


@pytest.mark.parametrize("entry", BAD, ids=[entry["id"] for entry in BAD])
def test_bad_config_schema_and_launcher_agree(entry: dict[str, Any]) -> None:
    try:
        data = parsed(entry)
    except ConfigError as exc:  # not valid YAML: refused before any schema applies
        assert entry["field"] in str(exc)
        assert "schema" not in entry
        return
    with pytest.raises(ConfigError) as info:
        check_runtime(data)
    assert entry["field"] in str(info.value)
    errors = schema_errors(data)
    if entry.get("schema") == "accepts":
        assert errors == [], "the schema refuses it: drop 'schema: accepts' from the entry"
    else:
        assert errors, f"the schema accepts it but the launcher says: {info.value}"
