"""The zoo beyond MobileNetV1 (MixNet-S, ShuffleNetV2 1x, SqueezeNet 1.1, Xception-tiny): sizes against
the papers, structure, the create_model rules, signal-keeping init, and conversion (float TFLite vs
ONNX, int8 SQNR, TRANSPOSE count)."""
import json

import pytest

torch = pytest.importorskip("torch")

import edgenet
from edgenet.cli import main
from edgenet.errors import UsageError
from edgenet.zoo import create_model

NEW = ("mixnet_s", "shufflenet_v2_x1_0", "squeezenet1_1", "xception_tiny")


@pytest.fixture(scope="module")
def summaries():
    """At the papers' 224 px (Xception-tiny has no paper numbers: its parameters need no large input)."""
    sizes = {name: edgenet.info(name, resolution=224) for name in NEW if name != "xception_tiny"}
    return {**sizes, "xception_tiny": edgenet.info("xception_tiny", resolution=32)}


def test_sizes_match_the_papers(summaries):
    # ShuffleNetV2 Table 5 (1x): 146 M FLOPs (mult-adds), 2.3 M weights
    s = summaries["shufflenet_v2_x1_0"]
    assert s.params == 2_278_604 and round(s.params / 1e6, 1) == 2.3
    assert abs(s.mult_adds / 146e6 - 1) < 0.01
    # SqueezeNet 1.1: 1,235,496 parameters, 0.35 G mult-adds (2.4x less than v1.0's ~0.83 G)
    s = summaries["squeezenet1_1"]
    assert s.params == 1_235_496 and abs(s.mult_adds / 0.35e9 - 1) < 0.01
    # MixNet-S: 4.1 M parameters, 256 M FLOPS. Our count is conv + FC mult-adds only (239 M); the
    # paper's figure is ~7% higher for MixNet-M too (339 vs 360 M), so that is counting, not structure
    s = summaries["mixnet_s"]
    assert round(s.params / 1e6, 1) == 4.1
    assert 0.92 < s.mult_adds / 256e6 < 0.95
    # Xception-tiny: our own table, 1-2 M parameters
    assert 1.5e6 < summaries["xception_tiny"].params < 2e6
    for s in summaries.values():  # per-layer rows add up (BN sits on its conv's row)
        assert sum(r.params for r in s.layers) == s.params


def test_shufflenet_table5_structure(summaries):
    m = create_model("shufflenet_v2_x1_0", resolution=224)
    assert [len(st) for st in (m.stage2, m.stage3, m.stage4)] == [4, 8, 4]
    x = torch.zeros(1, 3, 224, 224)
    with torch.no_grad():
        x = m.maxpool(m.conv1(x))
        assert tuple(x.shape[1:]) == (24, 56, 56)
        for stage, shape in ((m.stage2, (116, 28, 28)), (m.stage3, (232, 14, 14)), (m.stage4, (464, 7, 7))):
            x = stage(x)
            assert tuple(x.shape[1:]) == shape
    last_conv = [r for r in summaries["shufflenet_v2_x1_0"].layers if r.type.startswith("conv")][-1]
    assert last_conv.output_shape == (1024, 7, 7)


def test_channel_shuffle_interleaves_the_halves():
    from edgenet.zoo.shufflenet_v2 import channel_shuffle

    x = torch.arange(8.0).reshape(1, 8, 1, 1)
    assert channel_shuffle(x, 2).flatten().tolist() == [0, 4, 1, 5, 2, 6, 3, 7]


def test_squeezenet_v11_structure(summaries):
    rows = summaries["squeezenet1_1"].layers
    assert rows[0].type == "conv 3x3/s2" and rows[0].output_shape == (64, 111, 111)
    pools = [r.output_shape for r in rows if r.type == "MaxPool2d"]
    assert pools == [(64, 55, 55), (128, 27, 27), (256, 13, 13)]   # ceil-mode pools, v1.1 placement
    fires = [r for r in rows if r.name.endswith("expand3x3")]
    assert [r.output_shape[0] * 2 for r in fires] == [128, 128, 256, 256, 384, 384, 512, 512]
    assert rows[-2].name == "classifier.1" and rows[-2].output_shape == (1000, 13, 13)


def test_mixnet_mixed_kernels_and_se():
    from edgenet.zoo.layers import SqueezeExcite
    m = create_model("mixnet_s", resolution=32)
    mdconvs = [block.dw for block in m.blocks]
    kernels = [tuple(c[0].kernel_size[0] for c in md.convs) for md in mdconvs]
    assert len(kernels) == 16 and kernels[0] == (3,) and kernels.count((3, 5, 7, 9, 11)) == 1
    assert sum(isinstance(x, SqueezeExcite) for x in m.modules()) == 13
    assert [type(b.dw.convs[0][-1]).__name__ for b in m.blocks] == ["ReLU"] * 3 + ["SiLU"] * 13  # swish from 40 ch
    assert all(isinstance(b.se.act, torch.nn.SiLU) for b in m.blocks[3:])
    # the MDConv groups split the channels as the reference does (remainder to the first group)
    md = [x for x in mdconvs if len(x.convs) == 5][0]
    assert md.splits == [144] * 5 and all(c[0].groups == 144 for c in md.convs)   # depthwise
    grouped = [b.expand for b in m.blocks if not isinstance(b.expand, torch.nn.Identity) and len(b.expand.convs) == 2]
    assert len(grouped) == 8 and all(c[0].groups == 1 for g in grouped for c in g.convs)  # 2-group 1x1 expansions


@pytest.mark.parametrize("name", NEW)
def test_seeded_and_signal_keeping(name):
    a = create_model(name, resolution=32, num_classes=10)
    b = create_model(name, resolution=32, num_classes=10)
    c = create_model(name, resolution=32, num_classes=10, seed=1)
    x = torch.randn(4, 1, 3, 32, 32)
    with torch.no_grad():  # one image at a time: the batch size the models were built with
        ya, yb, yc = (torch.cat([m(xi) for xi in x]) for m in (a, b, c))
    assert torch.equal(ya, yb) and not torch.equal(ya, yc)
    assert not a.training
    # untrained, eval mode: the logits still depend on the input (no vanished or exploded signal)
    spread = float(ya.std(0).mean())
    assert 1e-3 < spread < 10, spread


@pytest.mark.parametrize("name", ["shufflenet_v2_x1_0", "squeezenet1_1"])
def test_alpha_rejected_without_width_multiplier(name):
    with pytest.raises(UsageError, match="no width multiplier"):
        create_model(name, alpha=0.5, resolution=32)


@pytest.mark.parametrize("name", ["mixnet_s", "xception_tiny"])
def test_alpha_thins_the_network(name):
    full = edgenet.info(name, resolution=32, num_classes=10)
    half = edgenet.info(name, alpha=0.5, resolution=32, num_classes=10)
    assert half.params < 0.6 * full.params and half.mult_adds < 0.6 * full.mult_adds
    assert half.layers[0].output_shape[0] * 2 == full.layers[0].output_shape[0]   # the stem


def test_activation_only_where_selectable():
    with pytest.raises(UsageError, match="uses its paper's activations"):
        create_model("mixnet_s", activation="relu", resolution=32)
    create_model("mixnet_s", activation="relu6", resolution=32)   # the CLI's default: accepted
    assert any(isinstance(x, torch.nn.ReLU) for x in create_model("mobilenet_v1", activation="relu",
                                                                   alpha=0.25, resolution=32).modules())


def test_models_and_info_cli(capsys):
    assert main(["models", "--json"]) == 0
    names = [e["name"] for e in json.loads(capsys.readouterr().out)]
    assert names[0] == "mobilenet_v1" and set(NEW) <= set(names)
    for name in NEW:
        assert main(["info", name, "--resolution", "32", "--num-classes", "10", "--json"]) == 0
        d = json.loads(capsys.readouterr().out)
        assert d["params"] == sum(r["params"] for r in d["layers"]) and d["mult_adds"] > 0
        assert d["layers"][-1]["output_shape"][0] == 10
    assert main(["info", "squeezenet1_1", "--alpha", "0.5"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no width multiplier" in err
    assert main(["info", "shufflenet_v2"]) == 2
    assert "did you mean shufflenet_v2_x1_0" in capsys.readouterr().err


def test_maxpool_padding_keeps_int8_ranges(tmp_path):
    """A padded MaxPool (PyTorch pads 1 on both sides, TF 'SAME' would pad 0/1) is converted with edge
    padding: padding with the lowest float gave the int8 tensor a scale of ~1e36 (every output zero)."""
    pytest.importorskip("tensorflow")
    import onnx

    from edgenet.converters.export import export_onnx

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.MaxPool2d(3, 2, padding=1),
                                torch.nn.Flatten(), torch.nn.Linear(8 * 16 * 16, 4))
    onnx.save(export_onnx(model, (1, 3, 32, 32)), str(tmp_path / "pool.onnx"))
    result = edgenet.convert(str(tmp_path / "pool.onnx"), calib_samples=8, eval_samples=4, layer_report=False,
                             out=tmp_path / "o")
    v = result.report.validation
    assert v.float_rel_err < 1e-5 and v.int8_sqnr_db > 20
    assert "PADV2" not in result.report.ops and result.report.ops["MAX_POOL_2D"] == 1


# -- conversion of every zoo model ----------------------------------------------------------
def _xnnpack_partitions(path) -> int:
    """How many XNNPACK subgraphs LiteRT makes of a model (1: the delegate runs all of it)."""
    from edgenet.runtime import make_interpreter

    return sum(op["op_name"] == "DELEGATE" for op in make_interpreter(path, 2)._get_ops_details())


@pytest.mark.slow
@pytest.mark.parametrize("name,transposes", [("mixnet_s", 0), ("shufflenet_v2_x1_0", 16), ("squeezenet1_1", 0),
                                             ("xception_tiny", 0)])
def test_zoo_model_converts(name, transposes, tmp_path):
    pytest.importorskip("tensorflow")
    result = edgenet.convert(name, resolution=64, num_classes=10, calib_samples=16, eval_samples=8,
                             layer_report=False, out=tmp_path / "o")
    report = json.loads((tmp_path / "o" / "report.json").read_text())
    v = report["validation"]
    assert v["float_rel_err"] <= 1e-4
    assert v["int8_sqnr_db"] > 12   # reported; untrained nets at 64 px measure 17-34 dB
    # channels-last end to end: only ShuffleNet's 16 channel shuffles (one per unit) transpose
    assert report["ops"].get("TRANSPOSE", 0) == transposes
    assert report["ops_float"].get("TRANSPOSE", 0) == transposes
    assert result.int8_path is not None and report["sizes"]["int8_bytes"] < report["sizes"]["float_bytes"] / 3
    # XNNPACK runs the whole graph, float and int8: no SPLIT_V or 5-way SPLIT (MixNet's MDConv), no
    # SLICE/PADV2 (padded MaxPool), no standalone int8 RELU (Xception's pre-activations)
    assert not {"SPLIT_V", "PADV2", "SLICE", "GATHER", "RELU"} & set(report["ops"])
    assert _xnnpack_partitions(result.float_path) == 1
    assert _xnnpack_partitions(result.int8_path) == 1
