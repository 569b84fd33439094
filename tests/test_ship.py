"""``python -m train ship``'s record of how a model was made: the training facts (``ModelConfig.training``), the
reproduce line written from them, and the ship step's own arguments. The run shipped end to end, the same from its
facts as from an older config's reproduce line, is in tests/test_multisource.py."""
from __future__ import annotations

from pathlib import Path

import pytest

from conftest import REPO


@pytest.mark.parametrize("folder", sorted((REPO / "assets").glob("*/config.json")), ids=lambda p: p.parent.name)
def test_a_shipped_config_s_facts_write_its_reproduce_line_again(folder):
    from train.recipes import get_recipe
    from train.reproduce import command_line, training_of
    from zoo.config import ModelConfig

    config = ModelConfig.load(folder)
    facts = training_of(config)  # shipped before the field existed: read back from the line, all they carry
    assert not config.training or facts == config.training
    assert command_line(facts) == config.reproduce
    flags = get_recipe(facts["recipe"]).parse_args(facts["args"])  # as ship parses them again
    assert flags.data and flags.training == {k: facts[k] for k in ("recipe", "args")}
    assert facts["ship"][1:3] == ["--out", f"assets/{folder.parent.name}"]


def test_the_facts_are_the_command_that_trains_from_scratch():
    from train.recipes import get_recipe
    from train.reproduce import command_line, training_of

    args = get_recipe("aptos").parse_args(["--data", "my data", "--format", "aptos", "--resume", "--epochs", "3"])
    assert args.training == {"recipe": "aptos", "args": ["--data", "my data", "--format", "aptos", "--epochs", "3"]}
    assert args.command == command_line(args.training) == "python -m train aptos --data 'my data' --format aptos --epochs 3"
    with pytest.raises(ValueError, match="not trained by `python -m train`"):
        training_of(type("Config", (), {"training": {}, "reproduce": "python train.py --epochs 3"})())


def test_the_ship_step_records_the_flags_its_numbers_depend_on():
    from train.ship import build_parser, ship_arguments

    args = build_parser().parse_args([
        "runs/x", "--out", "assets/x", "--quiet", "--selection", "the only one", "--limit", "a limit",
        "--compare", "runs/y", "without crops", "--theta", "48", "--t", "0.50", "--also-test", "data/e", "eyepacs",
        "--ood-quantile", "0.99", "--ood-photos", "100", "--data-root", "data"])
    # The older ship step's order (name, t, theta, also-test, leave-out, compare); the indicator's sample where it is
    # not the default; never the card's texts, the data root or --quiet.
    assert ship_arguments(args) == ["runs/x", "--out", "assets/x", "--t", "0.5", "--theta", "48", "--also-test",
                                    "data/e", "eyepacs", "--compare", "runs/y", "without crops", "--ood-photos", "100"]
    assert ship_arguments(build_parser().parse_args([str(Path("runs/x/")), "--out", "a"])) == ["runs/x", "--out", "a"]
