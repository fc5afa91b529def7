"""MobileNetV1 against the paper (Howard et al. 2017, Tables 6 and 7) and the zoo's error paths."""
import json

import pytest

torch = pytest.importorskip("torch")

import edgenet
from edgenet.cli import main
from edgenet.errors import ModelError, UsageError
from edgenet.zoo import create_model, load_weights

# (alpha, resolution) -> (million mult-adds, million parameters) as printed in the paper
PAPER = {
    (1.0, 224): (569, 4.2), (0.75, 224): (325, 2.6), (0.5, 224): (149, 1.3), (0.25, 224): (41, 0.5),
    (1.0, 192): (418, 4.2), (1.0, 160): (290, 4.2), (1.0, 128): (186, 4.2),
}


@pytest.mark.parametrize("alpha,resolution", sorted(PAPER))
def test_totals_match_paper(alpha, resolution):
    macs, params = PAPER[(alpha, resolution)]
    s = edgenet.info("mobilenet_v1", alpha=alpha, resolution=resolution)
    # the paper rounds (and once truncates) to whole millions of mult-adds, tenths of millions of parameters
    assert abs(s.mult_adds / 1e6 - macs) < 1.0
    assert round(s.params / 1e6, 1) == params


def test_table1_structure():
    s = edgenet.info("mobilenet_v1")
    convs = [r for r in s.layers if r.type.startswith("conv")]
    assert len(convs) == 27                                   # 1 stem + 13 x (dw + pw)
    assert convs[0].type == "conv 3x3/s2" and convs[0].output_shape == (32, 112, 112)
    assert sum(r.type.startswith("conv dw") for r in convs) == 13
    assert s.layers[-1].type == "fc" and s.layers[-1].output_shape == (1000,)
    assert convs[-1].output_shape == (1024, 7, 7)
    # per-layer rows add up to the totals (BN parameters sit on their conv's row)
    assert sum(r.params for r in s.layers) == s.params
    assert s.mult_adds == 568_740_352


def test_activation_selectable():
    m = create_model(alpha=0.25, resolution=32, activation="relu")
    kinds = {type(x).__name__ for x in m.modules()}
    assert "ReLU" in kinds and "ReLU6" not in kinds


def test_untrained_weights_are_seeded():
    a = create_model(alpha=0.25, resolution=32, num_classes=3)
    b = create_model(alpha=0.25, resolution=32, num_classes=3)
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(a(x), b(x))


@pytest.mark.parametrize("kw,msg", [
    ({"alpha": 0.0}, "--alpha"), ({"alpha": 1.5}, "--alpha"),
    ({"resolution": 100}, "multiple of 32"), ({"resolution": 0}, "multiple of 32"),
])
def test_bad_hparams(kw, msg):
    with pytest.raises(UsageError, match=msg):
        create_model(**kw)


def test_weights_roundtrip_and_mismatch(tmp_path):
    m = create_model(alpha=0.25, resolution=32, num_classes=4, seed=3)
    path = tmp_path / "w.pt"
    torch.save(m.state_dict(), path)
    again = create_model(alpha=0.25, resolution=32, num_classes=4, weights=path)
    x = torch.randn(1, 3, 32, 32)
    assert torch.equal(m(x), again(x))

    other = create_model(alpha=0.5, resolution=32, num_classes=4)
    with pytest.raises(ModelError, match="shape mismatch"):
        load_weights(other, path)
    sd = m.state_dict()
    sd["extra.weight"] = torch.zeros(1)
    del sd["classifier.bias"]
    torch.save(sd, path)
    with pytest.raises(ModelError, match=r"1 missing keys \(classifier.bias\); 1 unexpected keys \(extra.weight\)"):
        load_weights(create_model(alpha=0.25, resolution=32, num_classes=4), path)
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(ModelError, match="not a PyTorch file"):
        load_weights(m, path)


def test_info_cli_json(capsys):
    assert main(["info", "mobilenet_v1", "--alpha", "0.5", "--resolution", "160", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert isinstance(d["params"], int) and isinstance(d["mult_adds"], int)
    assert d["params"] == sum(r["params"] for r in d["layers"])
    assert {"name", "type", "output_shape", "params", "mult_adds"} <= set(d["layers"][0])


def test_info_cli_errors(capsys):
    assert main(["info", "mobilenet_v1", "--alpha", "2"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--alpha must be in (0, 1]" in err
    assert main(["info", "mobilenet_v2"]) == 2
    assert "did you mean mobilenet_v1" in capsys.readouterr().err
