"""Google's inception5h -> googlenet_inception5h: parity with the PyTorch port's own module (lucent's InceptionV1)
on the same random weights, with that module's LRN set to the graph's true parameters; labels; hostile .pth."""

import importlib.util
import sys
import types
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from googlenet.cli import main
from googlenet.pretrained.inception5h import PREPROCESSING
from googlenet.weights import load_model
from tests.hostile import bare_hostile_pickle, hostile_pickle
from tests.protowriter import field, varint
from tests.system_packages import missing

# The attributes of the LRN nodes of tensorflow_inception_graph.pb (localresponsenorm0 and 1), as TensorFlow states
# them, and PyTorch's parameters for the same operation, derived here: TensorFlow sums the squares over
# 2 * depth_radius + 1 channels and does not divide alpha by that window; PyTorch's local_response_norm does.
TF_LRN = dict(depth_radius=5, bias=2.0, alpha=1e-4, beta=0.5)
_WINDOW = 2 * TF_LRN["depth_radius"] + 1
TRUE_LRN = dict(size=_WINDOW, alpha=TF_LRN["alpha"] * _WINDOW, beta=TF_LRN["beta"], k=TF_LRN["bias"])


def tf_lrn(x, depth_radius, bias, alpha, beta):
    """tf.nn.local_response_normalization's documented formula, in float64 numpy, on N x C x H x W:
    sqr_sum[c] = sum(x[c - r .. c + r] ** 2) (channels outside 0..C-1 left out), out = x / (bias + alpha *
    sqr_sum) ** beta."""
    import numpy as np

    a = x.double().numpy()
    sq = a ** 2
    sums = np.stack([sq[:, max(0, c - depth_radius): c + depth_radius + 1].sum(1) for c in range(a.shape[1])], 1)
    return torch.from_numpy(a / (bias + alpha * sums) ** beta)


def lucent_inceptionv1():
    """lucent's InceptionV1 class, loaded from its two files only (the package's __init__ pulls in the rest of
    lucent), with F.local_response_norm replaced by one that uses the graph's parameters: the port hard-codes
    size 9, k 1, which is wrong (lucent PR 51)."""
    spec = importlib.util.find_spec("lucent")
    if spec is None or not spec.submodule_search_locations:
        missing("torch-lucent is not installed", "torch-lucent 0.1.8 (pip --no-deps)", "make install")
    root = Path(list(spec.submodule_search_locations)[0]) / "modelzoo" / "inceptionv1"
    package = types.ModuleType("lucent.modelzoo.inceptionv1")
    package.__path__ = [str(root)]
    saved = {k: sys.modules.get(k) for k in ("lucent", "lucent.modelzoo", "lucent.modelzoo.inceptionv1")}
    for name in saved:
        sys.modules[name] = types.ModuleType(name) if name != "lucent.modelzoo.inceptionv1" else package
    try:
        modules = {}
        for name in ("helper_layers", "InceptionV1"):
            s = importlib.util.spec_from_file_location(f"lucent.modelzoo.inceptionv1.{name}", root / f"{name}.py")
            modules[name] = importlib.util.module_from_spec(s)
            setattr(package, name, modules[name])
            sys.modules[s.name] = modules[name]
            s.loader.exec_module(modules[name])
    finally:
        for name, old in saved.items():
            if old is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = old
    true_f = types.SimpleNamespace(**{k: getattr(F, k) for k in dir(F) if not k.startswith("__")})
    true_f.local_response_norm = lambda x, size, alpha, beta, k: F.local_response_norm(x, **TRUE_LRN)
    modules["InceptionV1"].F = true_f
    return modules["InceptionV1"].InceptionV1


def randomise_(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) * (2.0 / m.weight[0].numel()) ** 0.5)
                m.bias.copy_(torch.rand(m.bias.shape, generator=g) * 0.4 - 0.1)
    return model.eval()


@pytest.fixture(scope="module")
def port(tmp_path_factory):
    d = tmp_path_factory.mktemp("inception5h")
    theirs = randomise_(lucent_inceptionv1()(redirected_ReLU=False), seed=0)
    torch.save(theirs.state_dict(), d / "inception5h.pth")
    labels = d / "imagenet_comp_graph_label_strings.txt"
    labels.write_text("dummy\nkit fox\nEnglish setter\ncrane\ncrane\n")  # the real file repeats names too
    assert main(["convert", "--from", "inception5h", str(d / "inception5h.pth"), str(d / "i5h.safetensors"),
                 "--labels", str(labels)]) == 0
    return theirs, d / "i5h.safetensors"


def test_converted_equals_lucent_port_with_true_lrn(port):
    theirs, dst = port
    ours = load_model(dst)
    assert ours.metadata["arch"] == "googlenet_inception5h" and ours.num_classes == 1008
    assert ours.inception4a(torch.zeros(1, 480, 14, 14)).shape[1] == 508  # 192 + 204 + 48 + 64
    assert ours.preprocessing["mean"] == [117.0] * 3 and ours.preprocessing["pixel_range"] == 255
    assert ours.class_names[:6] == ["dummy", "kit fox", "English setter", "crane", "crane (4)", "class_5"]
    x = torch.rand(2, 3, 224, 224, generator=torch.Generator().manual_seed(1)) * 255 - 117
    logits = {}
    theirs.softmax2_pre_activation_matmul.register_forward_hook(lambda m, i, o: logits.update(out=o))
    with torch.no_grad():
        probs = theirs(x)
        got = ours(x)
    want = logits["out"]
    rel = float((got - want).abs().max() / want.abs().max())
    assert rel <= 1e-4, rel
    assert torch.equal(got.argmax(1), probs.argmax(1)) and torch.allclose(torch.softmax(got, 1), probs, atol=1e-4)


def test_converted_lrn_is_tensorflow_s_formula_on_the_graph_s_attributes(port):
    """The model's two LRN layers, and the PyTorch call the lucent reference above is patched with, against
    TensorFlow's formula on the graph's attributes, computed here (not the arch's own constants)."""
    _, dst = port
    ours = load_model(dst)
    g = torch.Generator().manual_seed(3)
    for layer, channels in ((ours.lrn1, 64), (ours.lrn2, 192)):
        x = torch.rand(2, channels, 9, 9, generator=g) * 60  # big enough that the denominator is far from bias
        want = tf_lrn(x, **TF_LRN)
        assert (want - x.double()).abs().max() > 1  # the normalisation does act
        with torch.no_grad():
            torch.testing.assert_close(layer(x).double(), want, rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(F.local_response_norm(x, **TRUE_LRN).double(), want, rtol=1e-5, atol=1e-5)


def test_port_lrn_constants_differ_from_the_graph(port):
    """The check above would not hold with the port's own LRN (size 9, k 1): it is a real difference."""
    theirs, dst = port
    ours = load_model(dst)
    x = torch.rand(1, 64, 56, 56) * 50
    assert not torch.allclose(ours.lrn1(x), F.local_response_norm(x, 9, 9.99999974738e-05, 0.5, 1.0), rtol=1e-3)


def test_asymmetric_same_padding_at_224():
    from googlenet.models.googlenet import SamePad

    x = torch.ones(1, 1, 224, 224)
    padded = SamePad(7, 2)(x)
    assert padded.shape[-2:] == (229, 229)  # 2 before, 3 after
    assert padded[0, 0, 2, 2] == 1 and padded[0, 0, 1, 2] == 0  # the image starts after 2 rows of padding
    assert padded[0, 0, 225, 225] == 1 and padded[0, 0, 226, 225] == 0  # and 3 rows follow it


@pytest.mark.parametrize("make", [hostile_pickle, bare_hostile_pickle])
def test_pth_that_pickles_code_is_refused_unrun(tmp_path, capsys, make):
    marker = tmp_path / "ran"
    src = make(tmp_path / "evil.pth", marker)
    assert main(["convert", "--from", "inception5h", str(src), str(tmp_path / "o.safetensors")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nothing in it was run" in err[0]
    assert not marker.exists() and not (tmp_path / "o.safetensors").exists()


def test_other_state_dict_names_first_missing_key(tmp_path, capsys):
    torch.save({"conv.weight": torch.zeros(1)}, tmp_path / "other.pth")
    assert main(["convert", "--from", "inception5h", str(tmp_path / "other.pth"), str(tmp_path / "o.st")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"googlenet convert: error: {tmp_path / 'other.pth'} is not inception5h: it has no "
                   f"conv2d0_pre_relu_conv.weight"]


def test_preprocessing_is_rgb_255_minus_117():
    from googlenet.data.transforms import model_input

    img = torch.tensor([[[[10]], [[20]], [[30]]]], dtype=torch.uint8)
    assert model_input(img, PREPROCESSING).flatten().tolist() == [10 - 117, 20 - 117, 30 - 117]


def test_summary_names_the_departures_from_table_1():
    from googlenet.summary import summarize

    s = summarize("googlenet_inception5h", num_classes=1008)
    assert s["departures"][:2] == ["inception_4a 3x3: 204 filters, Table 1 has 208",
                                   "inception_5a 5x5_reduce: 48 filters, Table 1 has 32"]
    assert any("SAME padding" in d for d in s["departures"]) and any("LRN size 11" in d for d in s["departures"])
    rows = {r["name"]: r for r in s["rows"]}
    assert rows["inception_4a"]["output"] == [508, 14, 14] and rows["conv1"]["patch"] == "7x7/2 SAME"
    assert summarize("googlenet")["departures"] == []


def lrn_node(name: bytes, depth_radius: int, bias: float, alpha: float, beta: float) -> bytes:
    """A NodeDef of op LRN with its four attributes as TensorFlow writes them: AttrValue.i (field 3, varint) for
    depth_radius, AttrValue.f (field 4, little-endian float32) for the others; an input edge and a T attr too."""
    import struct

    def attr(key: bytes, value: bytes) -> bytes:
        return field(5, field(1, key) + field(2, value))

    floats = b"".join(attr(k.encode(), varint(4 << 3 | 5) + struct.pack("<f", v))
                      for k, v in (("bias", bias), ("alpha", alpha), ("beta", beta)))
    return field(1, field(1, name) + field(2, b"LRN") + field(3, b"conv2d0") + attr(b"T", varint(6 << 3) + varint(1))
                 + attr(b"depth_radius", varint(3 << 3) + varint(depth_radius)) + floats)


def graphdef(state: dict, lrn: dict = TF_LRN) -> bytes:
    """A TensorFlow GraphDef with one Const node per weight, named and laid out as in tensorflow_inception_graph.pb
    (conv weights H x W x in x out, the classifier in x out), its two LRN nodes (localresponsenorm0 / 1, with the
    graph's attributes ``lrn``), plus a non-Const node the reader must skip."""
    nodes = [field(1, field(1, b"input") + field(2, b"Placeholder"))]
    nodes += [lrn_node(f"localresponsenorm{i}".encode(), **lrn) for i in (0, 1)]
    for key, t in state.items():
        module, suffix = key.rsplit(".", 1)
        layer = "softmax2" if module.startswith("softmax2") else module[: -len("_pre_relu_conv")]
        t = t.permute(2, 3, 1, 0) if t.ndim == 4 else t.t() if t.ndim == 2 else t
        shape = field(2, b"".join(field(2, varint(1 << 3) + varint(d)) for d in t.shape))
        tensor = varint(1 << 3) + varint(1) + shape + field(4, t.contiguous().numpy().astype("<f4").tobytes())
        attr = field(5, field(1, b"value") + field(2, field(8, tensor))) + field(5, field(1, b"dtype") + field(2, b""))
        nodes.append(field(1, field(1, f"{layer}_{suffix[0]}".encode()) + field(2, b"Const") + attr))
    return b"".join(nodes)


def test_graphdef_pb_converts_to_the_same_weights(port, tmp_path):
    theirs, dst = port
    pb = tmp_path / "tensorflow_inception_graph.pb"
    pb.write_bytes(graphdef(theirs.state_dict()))
    assert main(["convert", "--from", "inception5h", str(pb), str(tmp_path / "pb.safetensors")]) == 0
    a, b = load_model(tmp_path / "pb.safetensors").state_dict(), load_model(dst).state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_graphdef_lrn_nodes_are_read_and_the_converted_model_computes_them(port, tmp_path):
    """The LRN attributes come from the graph's own LRN nodes (read back by the converter's reader), and the
    converted model's LRN layers equal TensorFlow's formula, written out in tf_lrn, on those attributes."""
    from googlenet.pretrained.inception5h import read_graphdef

    theirs, _ = port
    pb = tmp_path / "tensorflow_inception_graph.pb"
    pb.write_bytes(graphdef(theirs.state_dict()))
    _, lrns = read_graphdef(pb)
    assert sorted(lrns) == ["localresponsenorm0", "localresponsenorm1"]
    for attrs in lrns.values():
        assert attrs["depth_radius"] == 5 and attrs["bias"] == 2.0 and attrs["beta"] == 0.5
        assert abs(attrs["alpha"] - 1e-4) < 1e-11  # float32 in the graph
    assert main(["convert", "--from", "inception5h", str(pb), str(tmp_path / "pb.safetensors")]) == 0
    ours = load_model(tmp_path / "pb.safetensors")
    x = torch.rand(2, 64, 9, 9, generator=torch.Generator().manual_seed(4)) * 60
    with torch.no_grad():
        torch.testing.assert_close(ours.lrn1(x).double(), tf_lrn(x, **lrns["localresponsenorm0"]), rtol=1e-5,
                                   atol=1e-5)


@pytest.mark.parametrize("change, named", [({"depth_radius": 4}, "depth_radius 4"), ({"bias": 1.0}, "bias 1"),
                                           ({"alpha": 2e-4}, "alpha 0.0002"), ({"beta": 0.75}, "beta 0.75")])
def test_graphdef_with_another_lrn_is_refused_in_one_line(port, tmp_path, capsys, change, named):
    """A graph whose LRN is not the arch's would convert to a model computing something else: refused."""
    theirs, _ = port
    pb = tmp_path / "other_lrn.pb"
    pb.write_bytes(graphdef(theirs.state_dict(), {**TF_LRN, **change}))
    capsys.readouterr()
    assert main(["convert", "--from", "inception5h", str(pb), str(tmp_path / "o.safetensors")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "LRN node localresponsenorm0" in err[0] and named in err[0], err
    assert "is not googlenet_inception5h's LRN" in err[0] and not (tmp_path / "o.safetensors").exists()


def test_graphdef_with_huge_length_is_one_line(tmp_path, capsys):
    pb = tmp_path / "huge.pb"
    pb.write_bytes(varint(1 << 3 | 2) + varint(8 << 30) + b"\0" * 32)
    assert main(["convert", "--from", "inception5h", str(pb), str(tmp_path / "o.safetensors")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "claims 8,589,934,592 bytes" in err[0]


def test_graphdef_lying_consts_are_one_line(tmp_path, capsys):
    """A Const whose shape product wraps around int64, and one whose bytes are not whole floats."""
    def const(name: bytes, dims: list[int], content: bytes) -> bytes:
        shape = field(2, b"".join(field(2, varint(1 << 3) + varint(d)) for d in dims))
        tensor = varint(1 << 3) + varint(1) + shape + field(4, content)
        return field(1, field(1, name) + field(2, b"Const") + field(5, field(1, b"value") + field(2, field(8, tensor))))

    cases = {"wrap.pb": (const(b"conv2d0_b", [1 << 32, 1 << 32], b""), "has 0 values for shape"),
             "odd.pb": (const(b"conv2d0_b", [1], b"\0" * 5), "holds 5 bytes, not a whole number of floats")}
    for name, (data, message) in cases.items():
        (tmp_path / name).write_bytes(data)
        capsys.readouterr()
        assert main(["convert", "--from", "inception5h", str(tmp_path / name), str(tmp_path / "o.safetensors")]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], err


def test_weights_inception5h_offline_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # an empty cache

    def offline(*args, **kwargs):  # what an offline machine answers; the test never touches the network
        raise OSError("[Errno 101] Network is unreachable")

    monkeypatch.setattr("socket.create_connection", offline)
    from PIL import Image

    Image.new("RGB", (70, 70)).save(tmp_path / "p.png")
    assert main(["predict", str(tmp_path / "p.png"), "--weights", "inception5h"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Network is unreachable" in err[0], err
    assert "ProGamerGov/pytorch-old-tensorflow-models/raw/master/inception5h.pth" in err[0]
    assert "googlenet convert --from inception5h inception5h.pth inception5h.safetensors" in err[0]


def test_weights_inception5h_from_hub_cache(port, tmp_path, monkeypatch):
    """The port's file already in torch.hub's cache is converted once and used, without the network."""
    theirs, dst = port
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr("socket.create_connection", lambda *a, **k: pytest.fail("network touched"))
    cache = tmp_path / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    torch.save(theirs.state_dict(), cache / "inception5h.pth")
    from googlenet.pretrained import load_weights_arg

    model = load_weights_arg("inception5h")
    assert model.metadata["arch"] == "googlenet_inception5h" and (cache / "googlenet_inception5h.safetensors").is_file()
    reference = load_model(dst)
    assert all(torch.equal(v, reference.state_dict()[k]) for k, v in model.state_dict().items())
    import googlenet

    api = googlenet.create_model("googlenet_inception5h", weights="inception5h")  # the public call
    assert api.preprocessing["mean"] == [117.0] * 3 and not api.training
    assert all(torch.equal(v, reference.state_dict()[k]) for k, v in api.state_dict().items())


def test_predict_feeds_rgb_255_minus_117_once_and_onnx_agrees(tmp_path, capsys):
    """predict on a photo equals the model on the image made by hand as the graph expects (resize 256, crop 224,
    RGB, 0..255, minus 117); BGR, the mean twice or a 0..1 scale would differ. ONNX export (SAME pads, TF LRN)
    agrees with ONNX Runtime."""
    import json

    import numpy as np
    from PIL import Image
    from torchvision.transforms.v2 import functional as TF

    import googlenet
    from googlenet.cli import main
    from googlenet.pretrained.inception5h import port_key
    from googlenet.models import create_model

    torch.manual_seed(2)
    sd = create_model("googlenet_inception5h", num_classes=1008, aux_logits=False).state_dict()
    sd["fc.weight"] = sd["fc.weight"] * 30  # a classifier whose softmax is far from uniform
    pth = tmp_path / "inception5h.pth"
    torch.save({port_key(k): v for k, v in sd.items()}, pth)
    out = tmp_path / "i5h.safetensors"
    assert main(["convert", "--from", "inception5h", str(pth), str(out)]) == 0
    rng = np.random.default_rng(1)
    arr = (rng.integers(0, 120, (300, 400, 3)) + np.array([130, 60, 0])).astype(np.uint8)  # coloured: order matters
    photo = tmp_path / "photo.png"
    Image.fromarray(arr).save(photo)
    capsys.readouterr()
    assert main(["predict", str(photo), "--weights", str(out), "--json", "--topk", "3"]) == 0
    got = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["predictions"][0]["topk"]
    img = TF.center_crop(TF.resize(torch.from_numpy(arr).permute(2, 0, 1), [256], antialias=True), [224]).float()
    model = googlenet.load_model(out).eval()
    rel = lambda a, b: float((a - b).abs().max() / b.abs().max())  # noqa: E731
    with torch.no_grad():
        logits = model((img - 117)[None])
        probs = torch.softmax(logits, 1)[0]
        top = torch.topk(probs, 3)
        assert [t["index"] for t in got] == top.indices.tolist()
        assert max(abs(t["prob"] - p) for t, p in zip(got, top.values.tolist())) < 1e-5
        assert probs.max() > 2 / 1008
        for wrong in (img.flip(0) - 117, img - 234, img / 255):  # BGR, mean twice, 0..1 scale
            assert rel(model(wrong[None]), logits) > 1e-3
    onnx_path = tmp_path / "i5h.onnx"
    assert main(["export", "--weights", str(out), "--format", "onnx", "--out", str(onnx_path)]) == 0
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    ort_logits = session.run(None, {session.get_inputs()[0].name: (img - 117)[None].numpy()})[0]
    assert rel(torch.from_numpy(ort_logits), logits) < 1e-4
