"""The option registry: defaults from the library's dataclasses, every default shown, one name per idea."""

from __future__ import annotations

import argparse
import re

import pytest

from dunemap.cli import build_parser, leaf_parsers
from dunemap.cli.options import HelpFormatter, defaults_of, show_default

PARSER = build_parser()
COMMANDS = leaf_parsers(PARSER)
# CLI defaults that deliberately differ from the library's: the commands write ./BENCHMARKS.md (the library
# nothing) and show progress on a terminal (write_dataset, called from other code, is silent by default)
CLI_ONLY_DEFAULTS = {("benchmark quality", "benchmarks_md"), ("benchmark speed", "benchmarks_md"),
                     ("benchmark speed", "out"), ("synth dataset", "progress")}


def _options(parser: argparse.ArgumentParser):
    required_groups = {id(a) for g in parser._mutually_exclusive_groups if g.required for a in g._group_actions}
    for action in parser._actions:
        if action.option_strings and action.help != argparse.SUPPRESS and action.dest != "help":
            yield action, action.required or id(action) in required_groups


def test_every_command_is_listed_and_has_help_and_quiet() -> None:
    assert {"train", "map", "prepare", "synth scene", "synth dataset", "stats", "quicklook", "gee-script"} <= set(COMMANDS)
    for name, parser in COMMANDS.items():
        flags = {s for a in parser._actions for s in a.option_strings}
        assert "--quiet" in flags, name


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_option_states_its_default(name: str) -> None:
    parser = COMMANDS[name]
    formatter = HelpFormatter(parser.prog)
    for action, required in _options(parser):
        assert action.help, f"{name} {action.option_strings}: no help"
        if required or action.nargs == 0 or "(required" in action.help:  # no default to state
            continue
        text = formatter._get_help_string(action)
        assert "default" in text, f"{name} {action.option_strings}: help does not state the default: {text!r}"
        if "default" not in action.help:  # appended by the formatter: the value itself
            assert f"(default: {show_default(action.default)})" in text % {}


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_help_names_metavars_after_options_not_fields(name: str) -> None:
    help_text = COMMANDS[name].format_help()
    for action, _ in _options(COMMANDS[name]):
        flag_name = max(action.option_strings, key=len).lstrip("-").replace("-", "_")
        if action.dest != flag_name and action.metavar is None and action.choices is None and action.nargs != 0:
            assert action.dest.upper() not in help_text, f"{name}: internal metavar {action.dest.upper()}"
    assert not re.search(r"IN_CHANNELS|HOLDOUT_REGIONS", help_text)


@pytest.mark.parametrize("name", sorted(n for n, p in COMMANDS.items() if p.get_default("config_class")))
def test_cli_defaults_equal_the_library_defaults(name: str) -> None:
    parser = COMMANDS[name]
    source = parser.get_default("config_class")
    defaults = defaults_of(source)
    checked = 0
    for action, _ in _options(parser):
        if action.dest in defaults and (name, action.dest) not in CLI_ONLY_DEFAULTS and action.dest != "size":
            expected = defaults[action.dest]
            got = action.default
            if isinstance(expected, tuple) and isinstance(got, (list, tuple)):
                got = tuple(got)
            assert got == expected, f"{name} {action.option_strings}: CLI default {got!r} != {source.__name__} {expected!r}"
            checked += 1
    assert checked >= 3, f"{name}: only {checked} options compared with {source}"


def test_synth_scene_size_default_is_the_scene_config_size() -> None:
    from dunemap.synth.scene import SceneConfig

    assert COMMANDS["synth scene"].get_default("size") == SceneConfig().size[0]


def test_one_name_per_idea_with_old_spellings_as_hidden_aliases(caplog) -> None:
    p = PARSER.parse_args(["prepare", "--image", "a.tif", "--labels", "b.gpkg", "--out", "d", "--block-size", "2",
                           "--max-nodata", "0.25"])
    assert p.block_tiles == 2 and p.min_valid == pytest.approx(0.75)
    assert "--block-size is deprecated; use --block-tiles" in caplog.text
    p = PARSER.parse_args(["benchmark", "quality", "--holdout", "namib,mojave"])
    assert p.holdout_regions == ["namib", "mojave"]
    p = PARSER.parse_args(["train", "--holdout-region", "namib"])
    assert p.holdout_regions == ["namib"]
    for name in ("prepare", "synth dataset"):
        flags = {s for a in COMMANDS[name]._actions if a.help != argparse.SUPPRESS for s in a.option_strings}
        assert {"--block-tiles", "--min-valid"} <= flags and not {"--block-size", "--max-nodata"} & flags, name
    assert "--block-size" not in COMMANDS["prepare"].format_help()
    assert "--holdout-region" in COMMANDS["benchmark quality"].format_help()


def test_quiet_before_or_after_the_command() -> None:
    assert PARSER.parse_args(["-q", "text", "show"]).quiet
    assert PARSER.parse_args(["text", "show", "--quiet"]).quiet
    assert not PARSER.parse_args(["text", "show"]).quiet


def test_verbose_before_or_after_the_command() -> None:
    import subprocess
    import sys

    assert PARSER.parse_args(["-v", "text", "show"]).verbose
    assert PARSER.parse_args(["text", "show", "-v"]).verbose
    assert PARSER.parse_args(["text", "show", "--verbose"]).verbose
    assert not PARSER.parse_args(["text", "show"]).verbose
    run = subprocess.run([sys.executable, "-m", "dunemap", "text", "show", "-v"], capture_output=True, text=True,
                         check=False)
    assert run.returncode == 0, run.stderr


def test_help_texts_print_single_percent_signs() -> None:
    for name, parser in COMMANDS.items():
        assert "%%" not in parser.format_help(), name
    assert "%%" not in PARSER.format_help()
    assert "95 % confidence" in COMMANDS["accuracy"].format_help().replace("\n", " ")


def test_the_command_table_matches_the_modules() -> None:
    """`dunemap --help` lists commands from COMMANDS without importing their modules: the table must say what
    the modules register."""
    import importlib

    from dunemap.cli import COMMAND_MODULES, COMMANDS

    top = next(a for a in PARSER._actions if isinstance(a, argparse._SubParsersAction))
    assert list(top.choices) == list(COMMANDS)
    assert {a.dest: a.help for a in top._choices_actions} == {name: text for name, (_, text) in COMMANDS.items()}
    assert sorted({module for module, _ in COMMANDS.values()}) == sorted(COMMAND_MODULES)
    for name, (module, _) in COMMANDS.items():
        one = build_parser(name)  # the parser main() builds for a run of this command
        sub = next(a for a in one._actions if isinstance(a, argparse._SubParsersAction))
        assert sub.choices[name].format_help() == top.choices[name].format_help(), name
        assert importlib.import_module(module).register  # the module named is the one that registers it


def test_top_level_help_imports_no_heavy_library() -> None:
    import subprocess
    import sys

    code = ("import contextlib, io, sys\n"
            "from dunemap.cli import main\n"
            "with contextlib.redirect_stdout(io.StringIO()) as out:\n"
            "    try:\n        main(['--help'])\n    except SystemExit:\n        pass\n"
            "assert 'sample' in out.getvalue() and '95 % intervals' in out.getvalue()\n"
            "print(sorted(m for m in ('torch', 'rasterio', 'numpy', 'pyogrio', 'matplotlib') if m in sys.modules))\n")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "[]"
    bad = subprocess.run([sys.executable, "-m", "dunemap", "nosuch"], capture_output=True, text=True, check=False)
    assert bad.returncode == 2 and "invalid choice: 'nosuch'" in bad.stderr and "'sample'" in bad.stderr
