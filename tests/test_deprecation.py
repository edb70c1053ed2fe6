"""wassnet.deprecation: one warning, naming the version that removes the old spelling."""

from __future__ import annotations

import warnings

import click
import pytest
from click.testing import CliRunner

from wassnet.clitools import Renamed
from wassnet.deprecation import (
    REMOVED_IN,
    WassnetDeprecationWarning,
    deprecated_alias,
    renamed_keys,
    renamed_keywords,
)
from wassnet.errors import InputError


def test_the_warning_names_both_spellings_and_the_version():
    assert issubclass(WassnetDeprecationWarning, FutureWarning)  # shown to end users
    with pytest.warns(WassnetDeprecationWarning, match=r"--old is deprecated \(removed in "
                      r"wassnet 9\.9\): use --new"):  # fmt: skip
        deprecated_alias("--old", "--new", removed_in="9.9")


def test_renamed_keys():
    with pytest.warns(WassnetDeprecationWarning, match=f"field 'a'.*{REMOVED_IN}"):
        assert renamed_keys({"a": 1, "c": 2}, {"a": "b"}, "field") == {"b": 1, "c": 2}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert renamed_keys({"b": 1}, {"a": "b"}, "field") == {"b": 1}  # nothing old
    with pytest.raises(InputError, match="old spelling"):
        renamed_keys({"a": 1, "b": 2}, {"a": "b"}, "field")


def test_renamed_keywords():
    @renamed_keywords(n_iter="iters")
    def f(x, iters=1):
        return x * iters

    assert f(2, iters=3) == 6
    with pytest.warns(WassnetDeprecationWarning, match=r"f\(n_iter=...\).*use iters="):
        assert f(2, n_iter=4) == 8
    with pytest.raises(TypeError, match="give one of them"):
        f(2, n_iter=4, iters=3)


@click.command()
@click.option("--limit", "limit", cls=Renamed, old=("--max",), type=int, removed_in="7.0")
def _command(limit):
    click.echo(limit)


def test_renamed_option_warns_with_its_version_and_refuses_both():
    with pytest.warns(WassnetDeprecationWarning, match=r"--max .*wassnet 7\.0.*--limit"):
        result = CliRunner().invoke(_command, ["--max", "3"])
    assert result.stdout == "3\n"
    both = CliRunner().invoke(_command, ["--max", "3", "--limit", "4"])
    assert both.exit_code == 2 and "removed in wassnet 7.0" in both.output
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert CliRunner().invoke(_command, ["--limit", "5"]).stdout == "5\n"


def test_old_saved_config_fields_warn_through_the_one_mechanism():
    from wassnet.certify.train import TrainConfig
    from wassnet.gan.trainer import GANConfig

    new = GANConfig().to_dict()
    old = {("critic_width" if k == "width" else k): v for k, v in new.items()}
    with pytest.warns(WassnetDeprecationWarning, match=r"'critic_width'.*removed in wassnet 0\.4"):
        assert GANConfig.from_dict(old) == GANConfig.from_dict(new)
    both = dict(old, width=new["width"])
    with pytest.raises(InputError, match="old spelling"):
        GANConfig.from_dict(both)

    config = TrainConfig().to_dict()
    legacy = {("train_limit" if k == "limit" else k): v for k, v in config.items()}
    with pytest.warns(WassnetDeprecationWarning, match=r"'train_limit'.*0\.4"):
        assert TrainConfig.from_dict(legacy) == TrainConfig.from_dict(config)
