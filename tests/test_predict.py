"""`recsys predict` and `recsys evaluate` end to end, and model fallbacks for unknown IDs."""

from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch

from recsys.checkpoint import load_checkpoint
from recsys.evaluate import predict_pairs
from recsys.models import build_model
from tests.conftest import run_cli


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from tests.conftest import FAST_CONFIG

    folder = tmp_path_factory.mktemp("ckpt")
    (folder / "recsys.toml").write_text(FAST_CONFIG)
    # DeepFM as a click-through model: label rating >= 4, its logloss defaults.
    ctr = '[data]\npositive_threshold = 4\n\n[model.params.deepfm]\nloss = "logloss"\n'
    (folder / "ctr.toml").write_text(FAST_CONFIG + ctr)
    out = {}
    for key, name, config in (
        ("mf_bias", "mf_bias", "recsys.toml"),
        ("deepfm", "deepfm", "recsys.toml"),
        ("deepfm_ctr", "deepfm", "ctr.toml"),
    ):
        out[key] = folder / f"{key}.pt"
        result = run_cli(
            "train", "--config", str(folder / config), "--model", name, "--out", str(out[key])
        )
        assert result.returncode == 0, result.stderr
    return out


def test_predict_keeps_every_row_and_clips_ratings(
    tmp_path: Path, checkpoints: dict[str, Path]
) -> None:
    pairs = tmp_path / "pairs.csv"
    pairs.write_text("user_id,item_id\n1,1\n2,3\n99999,1\n1,99999\n99999,99999\n1,1\n")
    out = tmp_path / "pred.parquet"
    result = run_cli(
        "predict",
        "--checkpoint",
        str(checkpoints["mf_bias"]),
        "--pairs",
        str(pairs),
        "--out",
        str(out),
    )
    assert result.returncode == 0, result.stderr
    frame = pl.read_parquet(out)
    assert frame.columns == ["user_id", "item_id", "prediction"]
    assert frame["user_id"].to_list() == [1, 2, 99999, 1, 99999, 1]
    assert frame["prediction"].is_not_null().all()
    assert frame["prediction"].is_between(1.0, 5.0).all()
    assert frame["prediction"][0] == frame["prediction"][5]


def test_predict_with_features_model(tmp_path: Path, checkpoints: dict[str, Path]) -> None:
    pairs = tmp_path / "pairs.parquet"
    pl.DataFrame({"user_id": [1, 424242], "item_id": [5, 5]}).write_parquet(pairs)
    out = tmp_path / "pred.parquet"
    result = run_cli(
        "predict",
        "--checkpoint",
        str(checkpoints["deepfm"]),
        "--pairs",
        str(pairs),
        "--out",
        str(out),
    )
    assert result.returncode == 0, result.stderr
    assert pl.read_parquet(out)["prediction"].is_finite().all()


def test_predict_writes_probabilities_for_a_logloss_model(
    tmp_path: Path, checkpoints: dict[str, Path]
) -> None:
    """A logloss model's predictions are P(rating >= positive_threshold): the sigmoid of its
    logits, in [0, 1], unknown users and items included."""
    pairs = tmp_path / "pairs.csv"
    pairs.write_text("user_id,item_id\n1,1\n2,3\n3,7\n4,2\n99999,1\n1,99999\n")
    out = tmp_path / "pred.parquet"
    result = run_cli(
        "predict", "--checkpoint", str(checkpoints["deepfm_ctr"]), "--pairs", str(pairs),
        "--out", str(out),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    got = pl.read_parquet(out)["prediction"].to_numpy()
    assert ((got > 0) & (got < 1)).all() and np.unique(got).size == got.size, got
    trained = load_checkpoint(checkpoints["deepfm_ctr"])
    assert trained.model.hparams["loss"] == "logloss" and trained.model.hparams["history"]
    user_idx = trained.users.encode(pl.Series([1, 2, 3, 4, 99999, 1])).fill_null(-1).to_numpy()
    item_idx = trained.items.encode(pl.Series([1, 3, 7, 2, 1, 99999])).fill_null(-1).to_numpy()
    logits = predict_pairs(trained.model, user_idx, item_idx, torch.device("cpu"))
    np.testing.assert_allclose(got, 1 / (1 + np.exp(-logits)), rtol=1e-5, atol=1e-6)


def test_predict_missing_column(tmp_path: Path, checkpoints: dict[str, Path]) -> None:
    pairs = tmp_path / "pairs.csv"
    pairs.write_text("user,item_id\n1,1\n")
    result = run_cli(
        "predict",
        "--checkpoint",
        str(checkpoints["mf_bias"]),
        "--pairs",
        str(pairs),
        "--out",
        str(tmp_path / "o.parquet"),
    )
    assert result.returncode == 65
    assert (
        result.stderr.strip().splitlines()[-1]
        == f"error: {pairs}: column 'user_id' missing (found: user, item_id); set columns.user in recsys.toml"
    )


def test_biased_mf_fallback_is_mean_plus_known_bias() -> None:
    model = build_model("mf_bias", 3, 3)
    with torch.no_grad():
        model.global_mean.fill_(3.5)
        model.user_bias.weight[1] = 0.25
        model.item_bias.weight[2] = -0.5
    got = model.predict(torch.tensor([1, -1, -1]), torch.tensor([-1, 2, -1]))
    torch.testing.assert_close(got, torch.tensor([3.75, 3.0, 3.5]))


def test_evaluate_prints_every_candidates_metrics(fast_config: Path) -> None:
    result = run_cli("evaluate", "--config", str(fast_config))
    assert result.returncode == 0, result.stderr
    header, *rows = result.stdout.strip().splitlines()
    assert header.split()[1:] == ["popularity", "mf_bias", "bpr"]
    labels = [row.split()[0] for row in rows[:-1]]
    assert {
        "ndcg@10",
        "recall@10",
        "precision@10",
        "map@10",
        "hitrate@10",
        "coverage@10",
        "rmse",
        "mae",
    } <= set(labels)
    assert "chosen by validation ndcg@10" in rows[-1]
