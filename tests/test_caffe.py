"""BVLC Caffe -> googlenet: a caffemodel written here in Caffe's binary format (random weights) is converted by
``googlenet convert --from caffe`` and run against OpenCV's Caffe importer (an independent engine) on a deploy
prototxt written here from BVLC's layer list; Caffe's input convention (BGR, 0..255, minus mean) is applied once;
hostile caffemodels are refused in one line."""

import json
import resource

import numpy as np
import pytest
import torch

from googlenet.caffe import AUX_LAYERS, BVLC_PREPROCESSING, TRUNK_LAYERS
from googlenet.pretrained import SOURCES
from googlenet.cli import main
from googlenet.data.transforms import model_input
from googlenet.models import create_model
from googlenet.weights import load_model

cv2 = pytest.importorskip("cv2")
INCEPTIONS = {"3a": (64, 96, 128, 16, 32, 32), "3b": (128, 128, 192, 32, 96, 64), "4a": (192, 96, 208, 16, 48, 64),
              "4b": (160, 112, 224, 24, 64, 64), "4c": (128, 128, 256, 24, 64, 64), "4d": (112, 144, 288, 32, 64, 64),
              "4e": (256, 160, 320, 32, 128, 128), "5a": (256, 160, 320, 32, 128, 128),
              "5b": (384, 192, 384, 48, 128, 128)}


# --- Caffe's wire format, written by hand here so the reader under test is checked against a separate writer ---
def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
        n >>= 7
        if not n:
            return bytes(out)


def field(number: int, payload: bytes) -> bytes:  # length-delimited
    return varint(number << 3 | 2) + varint(len(payload)) + payload


def blob(t: torch.Tensor, legacy: bool) -> bytes:
    data = field(5, t.detach().numpy().astype("<f4").tobytes())
    if legacy:  # num/channels/height/width, fc weights as 1 x 1 x out x in
        dims = [1] * (4 - t.ndim) + list(t.shape)
        return b"".join(varint(n << 3) + varint(d) for n, d in zip((1, 2, 3, 4), dims)) + data
    return field(7, field(1, b"".join(varint(d) for d in t.shape))) + data


def caffemodel(model: torch.nn.Module, legacy: bool = False, drop: str = "", **replace: torch.Tensor) -> bytes:
    """A NetParameter with one layer per BVLC name (``layer`` field 100, or legacy V1 ``layers`` field 2)."""
    state = {**model.state_dict(), **{k.replace("__", "."): v for k, v in replace.items()}}
    out = field(1, b"GoogleNet")
    for name, ours in {**TRUNK_LAYERS, **AUX_LAYERS}.items():
        if name == drop:
            continue
        kind = "InnerProduct" if "loss" in name and not name.endswith("/conv") else "Convolution"
        blobs = [blob(state[f"{ours}.weight"], legacy), blob(state[f"{ours}.bias"], legacy)]
        if legacy:  # V1LayerParameter: 4 name, 5 type enum (CONVOLUTION 4, INNER_PRODUCT 14), 6 blobs
            body = field(4, name.encode()) + varint(5 << 3) + varint(4 if kind == "Convolution" else 14)
            out += field(2, body + b"".join(field(6, b) for b in blobs))
        else:  # LayerParameter: 1 name, 2 type, 7 blobs
            out += field(100, field(1, name.encode()) + field(2, kind.encode()) + b"".join(field(7, b) for b in blobs))
    return out


def deploy_prototxt(size: int, num_classes: int, heads: bool = True) -> str:
    """BVLC's deploy.prototxt for GoogLeNet (the layer list of models/bvlc_googlenet), aux heads included; the
    trunk alone (up to inception_5b/output) with ``heads=False``, for input sizes the fixed-size heads do not take."""
    lines = [f'name: "GoogleNet"\ninput: "data"\ninput_shape {{ dim: 1 dim: 3 dim: {size} dim: {size} }}']

    def conv(name, bottom, n, k, stride=1, pad=0):
        lines.append(f'layer {{ name: "{name}" type: "Convolution" bottom: "{bottom}" top: "{name}" '
                     f'convolution_param {{ num_output: {n} kernel_size: {k} stride: {stride} pad: {pad} }} }}\n'
                     f'layer {{ name: "{name}_relu" type: "ReLU" bottom: "{name}" top: "{name}" }}')
        return name

    def pool(name, bottom, kind, k, stride, pad=0):
        lines.append(f'layer {{ name: "{name}" type: "Pooling" bottom: "{bottom}" top: "{name}" pooling_param '
                     f'{{ pool: {kind} kernel_size: {k} stride: {stride} pad: {pad} }} }}')
        return name

    def lrn(name, bottom):
        lines.append(f'layer {{ name: "{name}" type: "LRN" bottom: "{bottom}" top: "{name}" '
                     f'lrn_param {{ local_size: 5 alpha: 0.0001 beta: 0.75 }} }}')
        return name

    def fc(name, bottom, n, relu):
        lines.append(f'layer {{ name: "{name}" type: "InnerProduct" bottom: "{bottom}" top: "{name}" '
                     f'inner_product_param {{ num_output: {n} }} }}')
        if relu:
            lines.append(f'layer {{ name: "{name}_relu" type: "ReLU" bottom: "{name}" top: "{name}" }}')
        return name

    x = conv("conv1/7x7_s2", "data", 64, 7, 2, 3)
    x = lrn("pool1/norm1", pool("pool1/3x3_s2", x, "MAX", 3, 2))
    x = conv("conv2/3x3", conv("conv2/3x3_reduce", x, 64, 1), 192, 3, 1, 1)
    x = pool("pool2/3x3_s2", lrn("conv2/norm2", x), "MAX", 3, 2)
    for i, (c1, r3, c3, r5, c5, pp) in INCEPTIONS.items():
        p = f"inception_{i}"
        tops = [conv(f"{p}/1x1", x, c1, 1), conv(f"{p}/3x3", conv(f"{p}/3x3_reduce", x, r3, 1), c3, 3, 1, 1),
                conv(f"{p}/5x5", conv(f"{p}/5x5_reduce", x, r5, 1), c5, 5, 1, 2),
                conv(f"{p}/pool_proj", pool(f"{p}/pool", x, "MAX", 3, 1, 1), pp, 1)]
        lines.append(f'layer {{ name: "{p}/output" type: "Concat" '
                     + " ".join(f'bottom: "{t}"' for t in tops) + f' top: "{p}/output" }}')
        x = f"{p}/output"
        if i in ("4a", "4d") and heads:  # aux heads
            n = 1 if i == "4a" else 2
            a = conv(f"loss{n}/conv", pool(f"loss{n}/ave_pool", x, "AVE", 5, 3), 128, 1)
            fc(f"loss{n}/classifier", fc(f"loss{n}/fc", a, 1024, True), num_classes, False)
        if i in ("3b", "4e"):
            x = pool(f"pool{3 if i == '3b' else 4}/3x3_s2", x, "MAX", 3, 2)
    if heads:
        fc("loss3/classifier", pool("pool5/7x7_s1", x, "AVE", 7, 1), num_classes, False)
    return "\n".join(lines) + "\n"


def random_googlenet(seed: int = 0, sensitive: bool = False) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = create_model("googlenet", num_classes=1000, aux_logits=True).eval()
    with torch.no_grad():  # biases around 0.2 everywhere (Caffe's init): not zero, so a dropped bias shows
        for m in model.modules():
            if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
                m.bias.uniform_(-0.2, 0.4)
        if sensitive:
            # A random deep net's pooled features share one large pattern, so every image gets the same top class.
            # Centring the classifier on the features of grey images (bias = -W f_mean) and sharpening it makes the
            # top class follow the picture, so a wrong channel order changes labels.
            grey = torch.randint(0, 256, (4, 3, 1, 1), dtype=torch.uint8).expand(4, 3, 224, 224)
            mean = model.forward_features(model_input(grey, BVLC_PREPROCESSING)).logits.mean(0)
            model.fc.weight.mul_(20)
            model.fc.bias.copy_(-model.fc.weight @ mean)
    return model


@pytest.fixture(scope="module")
def bvlc(tmp_path_factory):
    """(reference torch model, caffemodel path, converted weights path)."""
    d = tmp_path_factory.mktemp("caffe")
    model = random_googlenet(sensitive=True)
    src = d / "bvlc_googlenet.caffemodel"
    src.write_bytes(caffemodel(model))
    assert main(["convert", "--from", "caffe", str(src), str(d / "bvlc.safetensors")]) == 0
    return model, src, d / "bvlc.safetensors"


def opencv_net(tmp_path, size: int, src, heads: bool = True) -> "cv2.dnn.Net":
    proto = tmp_path / f"deploy{size}.prototxt"
    proto.write_text(deploy_prototxt(size, 1000, heads))
    return cv2.dnn.readNetFromCaffe(str(proto), str(src))


def rel(a, b) -> float:
    a, b = torch.as_tensor(np.asarray(a)), torch.as_tensor(np.asarray(b))
    return float((a - b).abs().max() / b.abs().max())


@pytest.mark.slow
def test_converted_bvlc_equals_opencv_caffe_importer(bvlc, tmp_path):
    _, src, dst = bvlc
    model = load_model(dst)
    assert model.metadata["arch"] == "googlenet" and model.aux_logits and model.num_classes == 1000
    assert model.preprocessing["channel_order"] == "BGR" and model.preprocessing["pixel_range"] == 255
    assert model.preprocessing["mean"] == [104.0, 117.0, 123.0] and model.class_names[0] == "tench"
    torch.manual_seed(1)
    x = torch.rand(1, 3, 224, 224) * 255 - 117  # Caffe-scale input
    net = opencv_net(tmp_path, 224, src)
    net.setInput(x.numpy())
    logits, aux1, aux2, trunk = net.forward(["loss3/classifier", "loss1/classifier", "loss2/classifier",
                                             "inception_5b/output"])
    with torch.no_grad():
        ours = model(x, with_aux=True)
    assert rel(ours.logits, logits.reshape(1, -1)) <= 1e-4
    assert rel(ours.aux1, aux1.reshape(1, -1)) <= 1e-4
    assert rel(ours.aux2, aux2.reshape(1, -1)) <= 1e-4
    assert ours.logits.argmax() == int(logits.argmax())
    for size in (160, 257):  # the trunk at other sizes: odd sizes exercise Caffe's ceil-rounded pools
        x = torch.rand(1, 3, size, size) * 255 - 117
        net = opencv_net(tmp_path, size, src, heads=False)
        net.setInput(x.numpy())
        theirs = net.forward("inception_5b/output")
        captured = {}
        handle = model.inception5b.register_forward_hook(lambda m, i, o: captured.update(out=o))
        with torch.no_grad():
            model(x)
        handle.remove()
        assert captured["out"].shape == theirs.shape
        assert rel(captured["out"], theirs) <= 1e-4


def test_legacy_v1_layers_and_shapes_read_the_same(tmp_path):
    model = random_googlenet(seed=3)
    new, old = tmp_path / "new.caffemodel", tmp_path / "old.caffemodel"
    new.write_bytes(caffemodel(model))
    old.write_bytes(caffemodel(model, legacy=True))
    for src in (new, old):
        assert main(["convert", "--from", "caffe", str(src), str(src.with_suffix(".safetensors"))]) == 0
        loaded = load_model(src.with_suffix(".safetensors"))
        for k, v in model.state_dict().items():
            assert torch.equal(loaded.state_dict()[k], v), k


def test_bgr_255_mean_applied_exactly_once(bvlc, tmp_path):
    """Our input path against OpenCV's blobFromImage (BGR image, minus Caffe's mean): equal, and through predict
    the probabilities equal OpenCV's network on OpenCV's blob. Applied twice or not at all, both would differ."""
    model, src, dst = bvlc
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (224, 224, 3), dtype=np.uint8)
    blob_cv = cv2.dnn.blobFromImage(rgb[:, :, ::-1].copy(), 1.0, (224, 224), (104, 117, 123), swapRB=False)
    ours = model_input(torch.from_numpy(rgb).permute(2, 0, 1)[None], load_model(dst).preprocessing)
    assert torch.allclose(ours, torch.from_numpy(blob_cv), atol=1e-4)
    # The full predict path on a 256 x 256 picture: resize to 256 is the identity, then the centre 224 crop.
    big = rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)
    cv2.imwrite(str(tmp_path / "photo.png"), big[:, :, ::-1])
    net = opencv_net(tmp_path, 224, src)
    net.setInput(cv2.dnn.blobFromImage(big[16:240, 16:240, ::-1].copy(), 1.0, (224, 224), (104, 117, 123)))
    want = torch.softmax(torch.from_numpy(net.forward("loss3/classifier").reshape(-1)), 0)
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["predict", str(tmp_path / "photo.png"), "--weights", str(dst), "--crops", "1", "--json"]) == 0
    top = json.loads(out.getvalue().strip().splitlines()[-1])["predictions"][0]["topk"]
    assert [t["index"] for t in top] == torch.topk(want, 5).indices.tolist()
    assert abs(top[0]["prob"] - float(want.max())) <= 1e-4 * max(1.0, float(want.max()))


def test_other_network_refused_naming_first_missing_layer(tmp_path, capsys):
    model = random_googlenet()
    src = tmp_path / "other.caffemodel"
    src.write_bytes(caffemodel(model, drop="inception_4c/5x5"))
    assert main(["convert", "--from", "caffe", str(src), str(tmp_path / "o.safetensors")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no layer inception_4c/5x5" in err[0]
    assert not (tmp_path / "o.safetensors").exists()


def test_hostile_caffemodels_one_line_no_allocation(bvlc, tmp_path, capsys):
    _, src, _ = bvlc
    raw = src.read_bytes()
    huge = field(1, b"x") + varint(100 << 3 | 2) + varint(4 << 30) + b"\0" * 64  # a layer claiming 4 GiB
    misshapen = caffemodel(random_googlenet(), conv2__conv__weight=torch.zeros(64, 64, 3, 3))
    cases = {"truncated": (raw[: len(raw) // 3], "remain"), "huge": (huge, "claims 4,294,967,296 bytes"),
             "empty": (b"", "no layer with weights"), "text": (b"not a caffemodel \xff\xfe" * 9, "caffemodel"),
             "misshapen": (misshapen, "layer conv2/3x3_reduce is misshapen")}
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for name, (data, why) in cases.items():
        bad = tmp_path / f"{name}.caffemodel"
        bad.write_bytes(data)
        assert main(["convert", "--from", "caffe", str(bad), str(tmp_path / f"{name}.safetensors")]) == 2, name
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and why in err[0], (name, err)
        assert not (tmp_path / f"{name}.safetensors").exists()
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert grown_kib < 512 * 1024, grown_kib  # far from the 4 GiB claimed


def run_json(*argv) -> dict:
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main([*argv, "--json"]) == 0
    return json.loads(out.getvalue().strip().splitlines()[-1])


@pytest.mark.slow
def test_full_path_on_converted_bvlc_eval_144_crops_onnx_int8(bvlc, tmp_path):
    """eval on a folder labelled by OpenCV's own top-1 (so 100% means every image was fed as Caffe feeds it),
    predict with 144 crops, the ONNX export against ONNX Runtime, and int8 through the same input path."""
    _, src, dst = bvlc
    names = load_model(dst).class_names
    net = opencv_net(tmp_path, 224, src)
    rng = np.random.default_rng(5)
    labels = set()
    for i, colour in enumerate([(255, 40, 0), (0, 40, 255), (255, 255, 0), (0, 255, 255)]):
        # Strong colours over mild smooth noise: a BGR/RGB swap turns red into blue, so swapped input would change
        # OpenCV's labels; the noise makes the resize + crop of the eval view matter.
        noise = cv2.resize(rng.integers(0, 60, (8, 8, 3), dtype=np.uint8), (256, 256), interpolation=cv2.INTER_LINEAR)
        rgb = np.clip(np.array(colour) * 0.75 + noise, 0, 255).astype(np.uint8)
        net.setInput(cv2.dnn.blobFromImage(rgb[16:240, 16:240, ::-1].copy(), 1.0, (224, 224), (104, 117, 123)))
        label = names[int(net.forward("loss3/classifier").argmax())]
        labels.add(label)
        (tmp_path / "val" / label).mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(tmp_path / "val" / label / f"{i}.png"), rgb[:, :, ::-1])
    assert len(labels) >= 2, labels  # discriminative enough that a wrong channel order would show
    result = run_json("eval", "--weights", str(dst), "--data", str(tmp_path / "val"))
    print("eval:", result)
    assert result["top1"] == 1.0 and result["images"] == 4
    photo = next((tmp_path / "val").rglob("*.png"))
    one = run_json("predict", str(photo), "--weights", str(dst), "--crops", "1")["predictions"][0]["topk"]
    many = run_json("predict", str(photo), "--weights", str(dst), "--crops", "144")["predictions"][0]["topk"]
    print("1 crop:", one[0], "144 crops:", many[0])
    assert one[0]["label"] == photo.parent.name and 0 < many[0]["prob"] <= 1

    import onnxruntime as ort

    assert main(["export", "--weights", str(dst), "--format", "onnx", "--out", str(tmp_path / "b.onnx")]) == 0
    image = torch.from_numpy(cv2.imread(str(photo))[16:240, 16:240, ::-1].copy()).permute(2, 0, 1)[None]
    x = model_input(image, load_model(dst).preprocessing)
    session = ort.InferenceSession(str(tmp_path / "b.onnx"), providers=["CPUExecutionProvider"])
    meta = session.get_modelmeta().custom_metadata_map
    assert json.loads(meta["googlenet.preprocessing"])["channel_order"] == "BGR"  # travels with the graph
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    with torch.no_grad():
        want = load_model(dst)(x)
    assert rel(got, want) <= 1e-4

    from googlenet.evaluate.ensemble import Ensemble

    model = load_model(dst)
    items = [(0, 0, {view: image}) for view in Ensemble([model]).views("1")]
    fp32 = Ensemble([model]).probs(items, "1", 8)[0]
    int8 = Ensemble([model], precision="int8", backend="onnxruntime").probs(items, "1", 8)[0]
    cosine = torch.nn.functional.cosine_similarity(fp32, int8, dim=1).item()
    print("int8 vs fp32: cosine", cosine, "top-1", int(fp32.argmax()), int(int8.argmax()))
    assert int(int8.argmax()) == int(fp32.argmax()) and cosine > 0.9


def test_weights_bvlc_offline_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # an empty cache

    def offline(*args, **kwargs):  # what an offline machine answers; the test never touches the network
        raise OSError("[Errno 101] Network is unreachable")

    monkeypatch.setattr("socket.create_connection", offline)
    photo = tmp_path / "p.png"
    cv2.imwrite(str(photo), np.zeros((70, 70, 3), np.uint8))
    for name, how in (("bvlc", "googlenet convert --from caffe bvlc_googlenet.caffemodel bvlc.safetensors"),
                      ("inception5h", "googlenet convert --from inception5h inception5h.pth")):
        assert main(["predict", str(photo), "--weights", name]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "Network is unreachable" in err[0] and how in err[0], err
        assert SOURCES[name].url in err[0]


def test_weights_bvlc_from_hub_cache(bvlc, tmp_path, monkeypatch):
    """A caffemodel already in torch.hub's cache is converted once and used by --weights bvlc, no network."""
    _, src, dst = bvlc
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr("socket.create_connection", lambda *a, **k: pytest.fail("network touched"))
    cache = tmp_path / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    (cache / "bvlc_googlenet.caffemodel").write_bytes(src.read_bytes())
    from googlenet.weights import load_weights_arg

    model = load_weights_arg("bvlc")
    assert model.metadata["source"]["from"] == "caffe" and (cache / "googlenet-bvlc.safetensors").is_file()
    reference = load_model(dst)
    assert all(torch.equal(v, reference.state_dict()[k]) for k, v in model.state_dict().items())
