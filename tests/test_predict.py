"""`recsys predict` and `recsys evaluate` end to end, and model fallbacks for unknown IDs."""

from pathlib import Path

import polars as pl
import pytest
import torch

from recsys.models import build_model
from tests.conftest import run_cli


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from tests.conftest import FAST_CONFIG

    folder = tmp_path_factory.mktemp("ckpt")
    (folder / "recsys.toml").write_text(FAST_CONFIG)
    out = {}
    for name in ("mf_bias", "deepfm"):
        out[name] = folder / f"{name}.pt"
        result = run_cli(
            "train",
            "--config",
            str(folder / "recsys.toml"),
            "--model",
            name,
            "--out",
            str(out[name]),
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
