import json

import pytest
from click.testing import CliRunner

from wassnet import __version__
from wassnet.cli import main


def test_help_and_version():
    runner = CliRunner()
    result = runner.invoke(main, ["--help"])
    assert result.exit_code == 0 and "bound" in result.output
    result = runner.invoke(main, ["--version"])
    assert result.exit_code == 0 and __version__ in result.output


def test_bound_command_prints_certificate():
    result = CliRunner().invoke(
        main, ["bound", "--arch", "dense-small", "--input-shape", "4", "--json"]
    )
    assert result.exit_code == 0, result.output
    cert = json.loads(result.output)
    assert cert["bound"] <= 1 + 1e-4 and len(cert["layers"]) == 7


def test_bad_input_is_one_error_line():
    runner = CliRunner()
    for args in (
        ["bound", "--arch", "nope"],
        ["bound", "--input-shape", "1,27,28"],
        ["bound", "--input-shape", "a,b"],
    ):
        result = runner.invoke(main, args)
        assert result.exit_code != 0
        assert "Traceback" not in result.output
        assert "Error" in result.output


def test_json_output_is_strict():
    """NaN and infinities become null: what every strict JSON parser accepts."""
    from dataclasses import dataclass

    from wassnet.clitools import emit, strict_json

    @dataclass
    class Result:
        def to_dict(self) -> dict:
            return {
                "loss": float("nan"),
                "curve": [1.0, float("inf")],
                "nested": {"x": -float("inf")},
            }

    runner = CliRunner()
    import click

    @click.command()
    def show() -> None:
        emit(Result(), True, lambda: "")

    out = runner.invoke(show, [])
    assert out.exit_code == 0, out.output
    parsed = json.loads(out.output, parse_constant=lambda token: pytest.fail(token))
    assert parsed == {"loss": None, "curve": [1.0, None], "nested": {"x": None}}
    assert strict_json((1, 2.5, "a")) == [1, 2.5, "a"]
