"""Google's inception5h through its PyTorch port: parity with lucent's InceptionV1 (an independent implementation
of the graph) on the same random weights, the arch row's departures from Table 1, and hostile .pth files."""

import json
import pickle
import types

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import googlenet
from googlenet.cli import main
from googlenet.models import create_model

lucent_v1 = pytest.importorskip("lucent.modelzoo.inceptionv1.InceptionV1")

TRUE_LRN = dict(size=11, alpha=11e-4, beta=0.5, k=2.0)  # the graph's depth_radius 5, alpha 1e-4, bias 2, beta 0.5


def lucent_model(monkeypatch) -> torch.nn.Module:
    """lucent's InceptionV1 with random weights, its LRN set to the graph's true constants (lucent PR 51)."""
    def true_lrn(x, size, alpha, beta, k):
        assert (size, beta) == (9, 0.5)  # the port's wrong constants, which this replaces
        return F.local_response_norm(x, **TRUE_LRN)

    shim = types.SimpleNamespace(**{n: getattr(F, n) for n in dir(F) if not n.startswith("__")})
    shim.local_response_norm = true_lrn
    monkeypatch.setattr(lucent_v1, "F", shim)
    torch.manual_seed(0)
    model = lucent_v1.InceptionV1(redirected_ReLU=False).eval()
    with torch.no_grad():  # the default init leaves activations near zero deep in; scale so every layer matters
        for m in model.modules():
            if isinstance(m, torch.nn.Conv2d):
                torch.nn.init.normal_(m.weight, std=(2.0 / m.weight[0].numel()) ** 0.5)
                torch.nn.init.uniform_(m.bias, -0.1, 0.1)
    return model


def lucent_logits(model, x: torch.Tensor) -> torch.Tensor:
    seen = {}
    handle = model.softmax2_pre_activation_matmul.register_forward_hook(lambda m, i, o: seen.setdefault("z", o))
    with torch.no_grad():
        model(x)
    handle.remove()
    return seen["z"]


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


def test_converted_pth_equals_lucent_inceptionv1(monkeypatch, tmp_path, capsys):
    theirs = lucent_model(monkeypatch)
    pth = tmp_path / "inception5h.pth"
    torch.save(theirs.state_dict(), pth)
    labels = tmp_path / "imagenet_comp_graph_label_strings.txt"
    labels.write_text("dummy\n" + "\n".join(f"label {i}" for i in range(1, 1008)) + "\n")
    out = tmp_path / "inception5h.safetensors"
    assert main(["convert", "--from", "inception5h", str(pth), str(out), "--labels", str(labels), "--json"]) == 0
    info = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert info["arch"] == "googlenet_inception5h" and info["num_classes"] == 1008 and info["aux_logits"] is False
    pre = info["preprocessing"]
    assert (pre["channel_order"], pre["pixel_range"], pre["mean"], pre["std"]) == ("RGB", 255, [117.0] * 3, [1.0] * 3)
    ours = googlenet.load_model(out).eval()
    assert ours.class_names[0] == "dummy" and ours.class_names[1007] == "label 1007"

    x = torch.rand(2, 3, 224, 224) * 255 - 117  # what the graph sees: RGB 0..255 minus 117
    with torch.no_grad():
        got = ours(x)
    want = lucent_logits(theirs, x)
    assert got.shape == (2, 1008)
    assert rel(got, want) < 1e-4
    # The port's own (wrong) LRN constants give different logits: the test tells the two apart.
    monkeypatch.setattr(lucent_v1, "F", F)
    assert rel(got, lucent_logits(theirs, x)) > 1e-3


def test_same_padding_is_asymmetric_on_stride_2():
    from googlenet.models.googlenet import same_padding

    assert same_padding(224, 7, 2) == (2, 3)  # conv1 at 224: 2 before, 3 after (the port's F.pad(x, (2, 3, 2, 3)))
    assert same_padding(112, 3, 2) == (0, 1)
    assert same_padding(113, 3, 2) == (1, 1)  # odd sizes: TensorFlow's ceil(113 / 2) = 57
    model = create_model("googlenet_inception5h", num_classes=1008, aux_logits=True).eval()
    assert model.inception4a.branch2[1].conv.out_channels == 204
    assert model.inception4b.branch1.conv.in_channels == 508 and model.aux1.conv.conv.in_channels == 508
    assert model.inception5a.branch3[0].conv.out_channels == 48
    lrn = model.lrn1
    assert (lrn.size, lrn.alpha, lrn.beta, lrn.k) == (11, 11e-4, 0.5, 2.0)
    with torch.no_grad():
        out = model.maxpool1(model.conv1(torch.randn(1, 3, 113, 113)))
    assert out.shape == (1, 64, 29, 29)  # 113 -> 57 -> 29 under SAME


def test_hostile_pth_files_are_one_line(tmp_path, capsys):
    class Boom:
        def __reduce__(self):
            return (open, (str(tmp_path / "pwned"), "w"))

    code = tmp_path / "code.pth"
    code.write_bytes(pickle.dumps({"conv2d0_pre_relu_conv.weight": Boom()}, protocol=2))
    other = tmp_path / "other.pth"
    state = {k: v for k, v in create_model("googlenet", num_classes=10, aux_logits=False).state_dict().items()}
    torch.save(state, other)
    misshapen = tmp_path / "misshapen.pth"
    from googlenet.pretrained.inception5h import layer_map

    fake = {}
    model = create_model("googlenet_inception5h", num_classes=1008, aux_logits=False)
    sd = model.state_dict()
    for theirs, mine in layer_map().items():
        fake[f"{theirs}.weight"], fake[f"{theirs}.bias"] = sd[f"{mine}.weight"], sd[f"{mine}.bias"]
    fake["mixed4a_3x3_pre_relu_conv.weight"] = torch.zeros(208, 96, 3, 3)  # the paper's 208, not the graph's 204
    torch.save(fake, misshapen)
    cases = {code: "nothing in it was run", other: "tensor 'conv2d0_pre_relu_conv.weight' is missing",
             misshapen: "tensor 'mixed4a_3x3_pre_relu_conv.weight' has shape [208, 96, 3, 3], "
                        "expected [204, 96, 3, 3]"}
    for path, message in cases.items():
        out = tmp_path / "out.safetensors"
        assert main(["convert", "--from", "inception5h", str(path), str(out)]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and message in err, err
        assert not out.exists()
    assert not (tmp_path / "pwned").exists()


def test_inception5h_named_source_offline_is_one_line(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    import googlenet.convert as conv

    monkeypatch.setattr(conv, "_reachable", lambda host, port, timeout: "network unreachable")
    assert main(["predict", str(tmp_path), "--weights", "inception5h"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "inception5h.pth" in err and "googlenet convert --from inception5h" in err


def test_inception5h_named_source_uses_cached_port(monkeypatch, tmp_path):
    from googlenet.pretrained.inception5h import layer_map
    from googlenet.weights import load_weights_arg

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    sd = create_model("googlenet_inception5h", num_classes=1008, aux_logits=False).state_dict()
    cache = tmp_path / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    torch.save({f"{t}.{p}": sd[f"{m}.{p}"] for t, m in layer_map().items() for p in ("weight", "bias")},
               cache / "inception5h.pth")
    model = load_weights_arg("inception5h")
    assert model.metadata["arch"] == "googlenet_inception5h" and (cache / "inception5h.safetensors").is_file()
    assert torch.equal(model.state_dict()["fc.weight"], sd["fc.weight"])


def test_graphdef_pb_converts_to_the_same_model(tmp_path):
    from googlenet.pretrained.graphdef import write_graphdef
    from googlenet.pretrained.inception5h import from_file, layer_map

    torch.manual_seed(1)
    sd = create_model("googlenet_inception5h", num_classes=1008, aux_logits=False).state_dict()
    consts = {"input": torch.zeros(1)}
    for port, mine in layer_map().items():
        node = port.replace("_pre_relu_conv", "").replace("_pre_activation_matmul", "")
        w = sd[f"{mine}.weight"]
        consts[f"{node}_w"] = w.permute(2, 3, 1, 0) if w.dim() == 4 else w.t()  # TensorFlow: HWIO, in x out
        consts[f"{node}_b"] = sd[f"{mine}.bias"]
    pb = tmp_path / "tensorflow_inception_graph.pb"
    write_graphdef(pb, consts)
    model = from_file(pb)
    for k, v in model.state_dict().items():
        assert torch.equal(v, sd[k]), k
    huge = tmp_path / "huge.pb"  # field 1 (node), length 3 GB, then 10 bytes
    huge.write_bytes(bytes([0x0A, 0x80, 0x80, 0x80, 0x80, 0x0B]) + b"\x00" * 10)
    with pytest.raises(googlenet.errors.UserError, match="is not a TensorFlow GraphDef"):
        from_file(huge)


def test_inception5h_preprocessing_applied_exactly_once_and_exports(tmp_path, capsys):
    """predict equals the model on the image made by hand as the graph expects (resize 256, crop 224, RGB, 0..255,
    minus 117); ONNX export of the SAME-padded arch agrees with ONNX Runtime."""
    from PIL import Image
    from torchvision.transforms.v2 import functional as TF

    from googlenet.pretrained.inception5h import layer_map

    torch.manual_seed(2)
    sd = create_model("googlenet_inception5h", num_classes=1008, aux_logits=False).state_dict()
    port = {f"{t}.{p}": sd[f"{m}.{p}"] for t, m in layer_map().items() for p in ("weight", "bias")}
    port["softmax2_pre_activation_matmul.weight"] = port["softmax2_pre_activation_matmul.weight"] * 30
    pth = tmp_path / "inception5h.pth"
    torch.save(port, pth)
    out = tmp_path / "i5h.safetensors"
    assert main(["convert", "--from", "inception5h", str(pth), str(out)]) == 0
    rng = np.random.default_rng(1)
    arr = (rng.integers(0, 120, (300, 400, 3)) + np.array([130, 60, 0])).astype(np.uint8)
    photo = tmp_path / "photo.png"
    Image.fromarray(arr).save(photo)
    capsys.readouterr()
    assert main(["predict", str(photo), "--weights", str(out), "--json", "--topk", "3"]) == 0
    got = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["predictions"][0]["topk"]
    img = TF.center_crop(TF.resize(torch.from_numpy(arr).permute(2, 0, 1), [256], antialias=True), [224]).float()
    model = googlenet.load_model(out).eval()
    with torch.no_grad():
        logits = model((img - 117)[None])
        probs = torch.softmax(logits, 1)[0]
        top = torch.topk(probs, 3)
        assert [t["index"] for t in got] == top.indices.tolist()
        assert max(abs(t["prob"] - p) for t, p in zip(got, top.values.tolist())) < 1e-5
        assert probs.max() > 2 / 1008  # not uniform: the ranking means something
        for wrong in (img.flip(0) - 117, img - 234, img / 255):  # BGR, mean twice, 0..1 scale
            assert rel(model(wrong[None]), logits) > 1e-3
    onnx_path = tmp_path / "i5h.onnx"
    assert main(["export", "--weights", str(out), "--format", "onnx", "--out", str(onnx_path)]) == 0
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    ort_logits = session.run(None, {session.get_inputs()[0].name: (img - 117)[None].numpy()})[0]
    with torch.no_grad():
        assert rel(torch.from_numpy(ort_logits), model((img - 117)[None])) < 1e-4
