"""Every step of every workflow gives a value to every parameter of its tool (the branches of
its conditionals included), as Galaxy's workflow editor would save it. A parameter a step
lacks (one added to the tool later) makes Galaxy refuse to run the workflow through its API
("Workflow step has upgrade messages"), although planemo's workflow tests still pass."""

from pathlib import Path

import pytest
import yaml
from test_tool_parameters import TOOLS, expanded

WORKFLOWS = sorted(p for p in (TOOLS.parent / "workflows").glob("*.yml") if not p.stem.endswith("-tests"))


def missing(inputs, state: dict, connected: set[str], prefix: str = "") -> list[str]:
    """The parameters under ``inputs`` (an XML element) that ``state`` gives no value."""
    absent = []
    for child in inputs:
        name = child.get("name") or (child.get("argument") or "").lstrip("-").replace("-", "_")
        path = prefix + name
        if child.tag == "param" and path in connected:
            continue
        if child.tag == "param" and child.get("type") not in ("data", "data_collection"):
            if name not in state:
                absent.append(path)
        elif child.tag == "param" and child.get("optional") != "true":
            absent.append(f"{path} (a data input, neither connected nor optional)")
        elif child.tag == "param" and name not in state:  # Galaxy wants even an optional one given: null
            absent.append(f"{path} (an optional data input: null when not connected)")
        elif child.tag == "conditional":
            test = child.find("param")
            chosen = state.get(name)
            if not isinstance(chosen, dict) or test.get("name") not in chosen:
                absent.append(f"{path}|{test.get('name')}")
                continue
            when = next((w for w in child.findall("when") if w.get("value") == str(chosen[test.get("name")])), None)
            if when is not None:
                absent += missing(when, chosen, connected, f"{path}|")
        elif child.tag == "section":
            absent += missing(child, state.get(name) or {}, connected, f"{path}|")
        elif child.tag == "repeat":
            for index, instance in enumerate(state.get(name) or []):
                absent += missing(child, instance, connected, f"{path}_{index}|")
    return absent


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=lambda p: p.stem)
def test_every_step_sets_every_parameter_of_its_tool(workflow: Path):
    steps = yaml.safe_load(workflow.read_text())["steps"]
    problems = []
    for label, step in steps.items():
        tool = expanded(TOOLS / (step["tool_id"].removeprefix("dlhisto_") + ".xml"))
        connected = set((step.get("in") or {}).keys())
        absent = missing(tool.find("inputs"), step.get("tool_state") or {}, connected)
        problems += [f"step '{label}': {name}" for name in absent]
    assert not problems, f"{workflow.name}: no value for " + "; ".join(problems)
