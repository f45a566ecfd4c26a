"""Every Galaxy tool parameter that sets a command-line option agrees with the option, and so
with the options dataclass the option is built from (``bounds.add_option``): same default, a
range inside the accepted bounds, choices among the accepted ones. (A parameter without a min
or max is allowed: the step refuses a value out of its bounds in one line, which some tool
tests check through Galaxy.)"""

import copy
import math
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from dlhisto_core.cli.parser import build_parser

TOOLS = Path(__file__).resolve().parent.parent / "tools"
TOOL_XMLS = sorted(p for p in TOOLS.glob("*.xml") if p.name != "macros.xml")
DATA_MANAGER_XMLS = sorted(p for p in TOOLS.parent.glob("data_managers/*/data_manager/*.xml") if p.name != "macros.xml")


def expanded(path: Path) -> ET.Element:
    """The tool's XML with the macros of macros.xml expanded and their tokens replaced, as Galaxy
    loads it (``<expand macro>``, ``token_*`` defaults, ``<yield/>``, ``@TOKEN@``)."""
    root = ET.parse(path).getroot()
    sources = [ET.parse(TOOLS / "macros.xml").getroot(), root.find("macros")]  # shared, then the tool's own
    tokens = {t.get("name"): t.text or "" for source in sources for t in source.iter("token")}
    templates = {m.get("name"): m for source in sources for m in source.iter("xml")}

    def substitute(text: str, values: dict) -> str:
        for name, value in values.items():
            text = text.replace(name, value)
        return text

    def expand(element: ET.Element, values: dict) -> None:
        for index, child in enumerate(list(element)):
            if child.tag != "expand":
                expand(child, values)
                continue
            template = templates[child.get("macro")]
            local = {**values, **{f"@{k[6:].upper()}@": v for k, v in template.attrib.items() if k.startswith("token_")},
                     **{f"@{k.upper()}@": v for k, v in child.attrib.items() if k != "macro"}}
            body = copy.deepcopy(template)
            for node in body.iter():
                node.attrib = {k: substitute(v, local) for k, v in node.attrib.items()}
                node.text = substitute(node.text, local) if node.text else node.text
            expand(body, local)
            parts = []
            for node in body:
                parts += list(child) if node.tag == "yield" else [node]
            element.remove(child)
            for offset, node in enumerate(parts):
                element.insert(index + offset, node)
            expand(element, values)
            return

    expand(root, tokens)
    for node in root.iter():  # the tokens outside macros
        node.attrib = {k: substitute(v, tokens) for k, v in node.attrib.items()}
        node.text = substitute(node.text, tokens) if node.text else node.text
    return root


#: how every tool's command starts: the step runs with the job's cores
COMMAND_START = r'^\s*dlhisto --threads "\\\$\{GALAXY_SLOTS:-1\}" (\w+)\s'


def step_options(tool: ET.Element) -> dict:
    """The argparse actions of the tool's dlhisto step, by option string."""
    step = re.match(COMMAND_START, tool.find("command").text).group(1)
    parser = build_parser()
    steps = next(a for a in parser._actions if a.dest == "step")
    return {flag: action for action in steps.choices[step]._actions for flag in action.option_strings}


def tool_params(tool: ET.Element, flags: dict) -> list[tuple[str, ET.Element]]:
    """(option, param) for each param of the tool's inputs that sets an option: by its
    ``argument``, or by a name that is an option of the step."""
    found = []
    for param in tool.find("inputs").iter("param"):
        flag = param.get("argument") or "--" + (param.get("name") or "").replace("_", "-")
        if flag in flags:
            found.append((flag, param))
    return found


def number(text: str) -> float:
    return float(text)


@pytest.mark.parametrize("path", TOOL_XMLS, ids=lambda p: p.stem)
def test_tool_parameters_agree_with_the_options(path):
    tool = expanded(path)
    flags = step_options(tool)
    problems = []
    for flag, param in tool_params(tool, flags):
        action, kind = flags[flag], param.get("type")
        where = f"{path.name} {flag}"
        if kind == "boolean":
            if param.get("truevalue") == flag and param.get("checked", "false") != "false":
                problems.append(f"{where}: a switch that changes the default must be off by default")
        elif kind == "select" and param.get("multiple") == "true":  # a comma-separated list
            options = [o.get("value") for o in param.iter("option")]
            unknown = [o for o in options if o not in str(action.default).split(",")]
            if unknown:
                problems.append(f"{where}: options {unknown} are not among '{action.default}'")
        elif kind == "select" and action.choices:  # (a yes/no select of a conditional turns a switch on)
            options = [o.get("value") for o in param.iter("option") if o.get("value") not in ("", "none")]
            choices = action.choices
            unknown = [o for o in options if o not in choices]
            if unknown:
                problems.append(f"{where}: options {unknown} are not among {list(choices)}")
            selected = [o.get("value") for o in param.iter("option") if o.get("selected") == "true"] or options[:1]
            if action.default is not None and selected and selected[0] != action.default and param.get("optional") != "true":
                problems.append(f"{where}: default '{selected[0]}', the option's is '{action.default}'")
        elif kind in ("integer", "float"):
            if param.get("value") not in (None, "") and action.default is not None \
                    and not math.isclose(number(param.get("value")), action.default):
                problems.append(f"{where}: default {param.get('value')}, the option's is {action.default}")
            low, high = getattr(action, "bounds", None) or (-math.inf, math.inf)
            if param.get("min") is not None and number(param.get("min")) < low:
                problems.append(f"{where}: min {param.get('min')} below the accepted {low:g}")
            if param.get("max") is not None and number(param.get("max")) > high:
                problems.append(f"{where}: max {param.get('max')} above the accepted {high:g}")
        elif kind == "text" and isinstance(action.default, str) and param.get("value") not in (None, ""):
            if param.get("value") != action.default:
                problems.append(f"{where}: default '{param.get('value')}', the option's is '{action.default}'")
    assert not problems, "\n".join(problems)


def test_the_check_sees_the_parameters_of_every_tool_with_options():
    """The expansion finds the macro-made params too (so the check above is not vacuous)."""
    counts = {path.stem: len(tool_params(tool := expanded(path), step_options(tool))) for path in TOOL_XMLS}
    assert counts["segment_classic"] >= 7 and counts["train"] >= 8 and counts["predict"] >= 5
    assert counts["crossval"] >= 15 and counts["auto_annotate"] >= 6


@pytest.mark.parametrize("path", [*TOOL_XMLS, *DATA_MANAGER_XMLS], ids=lambda p: p.stem)
def test_every_tool_runs_its_step_with_the_jobs_cores(path):
    """A step with more threads than the job's cores (GALAXY_SLOTS) slows every job on the node."""
    command = expanded(path).find("command").text
    assert re.match(COMMAND_START, command), command[:80]
    assert len(re.findall(r"\bdlhisto\s", command)) == 1
