"""Model hyper-parameters are typed and ranged against each model's DEFAULTS (issue 13,
items 7 and 14): refused with a one-line error before any data is read."""

from __future__ import annotations

import pytest

from recsys.config import Config
from recsys.errors import ConfigError
from recsys.models import REGISTRY, build_model
from recsys.select import check_settings


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"dim": -3}, "model 'mf': [model.params.mf] dim = -3 must be at least 1"),
        ({"dim": "big"}, "dim = 'big': expected a whole number"),
        ({"dim": 16.5}, "dim = 16.5: expected a whole number"),
        ({"dim": True}, "dim = True: expected a whole number"),
        ({"lr": -0.1}, "lr = -0.1 must be above 0"),
        ({"lr": "fast"}, "lr = 'fast': expected a number"),
        ({"lr": float("nan")}, "lr = nan: expected a finite number"),
        ({"epochs": 0}, "epochs = 0 must be at least 1"),
        ({"init_std": 0}, "init_std = 0 must be above 0"),
        ({"negatives": 0}, "negatives = 0 must be at least 1"),
        ({"reg": -1}, "reg = -1 must be at least 0"),
        ({"loss": 3}, "loss = 3: expected a string"),
        ({"dimm": 3}, "model 'mf': unknown parameter(s) dimm"),
    ],
)
def test_bad_hyper_parameters_are_refused(params: dict, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        build_model("mf", 3, 4, **params)
    assert message in str(caught.value)


def test_lists_are_checked_element_by_element() -> None:
    with pytest.raises(ConfigError, match=r"hidden = 0 must be at least 1"):
        build_model("deepfm", 3, 4, hidden=[64, 0])
    with pytest.raises(ConfigError, match=r"hidden = \[\]: expected a non-empty list"):
        build_model("deepfm", 3, 4, hidden=[])


def test_good_values_are_typed_like_the_defaults() -> None:
    model = build_model("mf", 3, 4, dim=8.0, lr=1, epochs=2)
    assert (model.hparams["dim"], model.hparams["lr"], model.hparams["epochs"]) == (8, 1.0, 2)
    assert isinstance(model.hparams["dim"], int) and isinstance(model.hparams["lr"], float)


def test_every_registered_model_accepts_its_own_defaults() -> None:
    """The ranges hold for every default, so a model added later is not refused as shipped."""
    for name, cls in REGISTRY.items():
        assert cls.checked_hparams(dict(cls.DEFAULTS)) == cls.DEFAULTS, name


def config_with(params: dict, name: str = "auto") -> Config:
    config = Config()
    config.model.name = name
    config.model.params = params
    return config


def test_params_of_an_unknown_model_are_refused() -> None:
    with pytest.raises(ConfigError, match=r"\[model.params.svdpp\]: unknown model 'svdpp'"):
        check_settings(config_with({"svdpp": {"dim": 8}}))


def test_params_of_a_model_that_is_not_a_candidate_are_still_checked() -> None:
    """A typo in a table for a model not trained tonight is found tonight, not next month."""
    with pytest.raises(ConfigError, match=r"\[model.params.deepfm\] dim = -1 must be at least 1"):
        check_settings(config_with({"deepfm": {"dim": -1}}, name="bpr"))
    with pytest.raises(ConfigError, match=r"loss = 'hinge' unknown \(expected one of: mse, bpr"):
        check_settings(config_with({"bpr": {"loss": "hinge"}}, name="bpr"))
    check_settings(config_with({"bpr": {"dim": 8, "loss": "bce"}}, name="bpr"))
