"""The unlike-training indicator (zoo.ood): a feature-space distance fitted at ship time, stored with the weights."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from fundus import make_fundus


@pytest.fixture
def model():
    import zoo

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = zoo.create_model("efficientnet_lite0", task="multilabel", labels=["Normal", "Diabetes"], pretrained=False,
                             head="gap_linear", input_size=64)
    return m.eval()


def _features(model, seeds) -> np.ndarray:
    from fundus import preprocess
    from zoo.ood import pooled_features

    with torch.no_grad(), pooled_features(model, model.config.target_layer) as found:
        for s in seeds:
            model(preprocess(make_fundus(96, seed=s)[0], model.config).tensor)
    return torch.cat(found).numpy()


def test_distance_is_the_rms_z_score_and_the_threshold_a_validation_quantile(model):
    from zoo.ood import assess, fit_reference

    rng = np.random.default_rng(0)
    train, val = rng.normal(2.0, 3.0, (400, 8)), rng.normal(2.0, 3.0, (200, 8))
    ood = fit_reference(model, train, val, quantile=0.9, layer="backbone.bn2")
    ref = model.feature_reference
    assert ref.mean.numpy() == pytest.approx(train.mean(0), abs=1e-5)
    x = torch.tensor([[5.0] * 8])
    var = 0.9 * train.var(0) + 0.1 * train.var(0).mean()  # shrunk towards the mean variance
    expected = float(np.sqrt(((5.0 - train.mean(0)) ** 2 / var).mean()))
    assert float(ref.distance(x)) == pytest.approx(expected, rel=1e-4)
    val_d = ref.distance(torch.from_numpy(val)).numpy()
    assert (val_d > ood["threshold"]).mean() == pytest.approx(0.1, abs=0.01)
    far = assess(model, torch.tensor([[2.0] * 8, [40.0] * 8]))
    assert [f["unlike_training"] for f in far] == [False, True] and far[1]["threshold"] == ood["threshold"]
    with pytest.raises(ValueError, match="quantile"):
        fit_reference(model, train, val, quantile=1.0)
    with pytest.raises(ValueError, match="feature sizes"):
        fit_reference(model, train, val[:, :4])


@pytest.mark.slow
def test_the_reference_travels_with_the_weights_and_predict_flags_unlike_photos(model, tmp_path):
    import zoo
    from zoo.ood import fit_reference

    assert "unlike_training" not in zoo.predict(model, make_fundus(96, seed=1)[0])[0]  # no reference: no claim
    fit_reference(model, _features(model, range(40)), _features(model, range(40, 60)), quantile=0.95)
    model.save_pretrained(tmp_path / "m", dtype=torch.float16)
    loaded = zoo.load(str(tmp_path / "m"), device="cpu")
    assert loaded.config.ood["features"] == model.feature_reference.mean.numel()
    torch.testing.assert_close(loaded.feature_reference.scale, model.feature_reference.scale, rtol=1e-3, atol=1e-4)
    like = zoo.predict(loaded, make_fundus(96, seed=61)[0])[0]
    assert like["unlike_training"]["distance"] < 2 * like["unlike_training"]["threshold"]
    # A photo unlike the generated training photos: another field of view, colour and texture.
    rgb = make_fundus(96, seed=62)[0].copy()
    rgb[..., 0] = 255 - rgb[..., 0]
    rgb[::2] = rgb[::2] // 3
    unlike = zoo.predict(loaded, rgb)[0]["unlike_training"], zoo.predict(loaded, rgb)[0]["warnings"]
    assert unlike[0]["distance"] > unlike[0]["threshold"] > like["unlike_training"]["distance"]
    assert unlike[0]["unlike_training"] and any("unlike the training photos" in w for w in unlike[1])
    assert not any("unlike the training photos" in w for w in like["warnings"])
