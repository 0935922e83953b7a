"""BVLC's GoogLeNet from a .caffemodel: parity with OpenCV's Caffe importer (an independent engine) running BVLC's
deploy prototxt, the preprocessing applied exactly once through predict/eval/export/int8, and hostile files."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

import googlenet
from googlenet.cli import main
from googlenet.pretrained.caffe import write_caffemodel
from tests.bvlc_fixture import deploy, random_weights
from tests.hostile import peak_rss_growth
from tests.protowriter import field, varint
from tests.system_packages import missing



def opencv():
    """OpenCV's Caffe importer, the parity reference: only the tests that run it need it (the hostile-file tests
    do not), and under CI its absence fails them."""
    try:
        import cv2
    except ImportError:
        missing("OpenCV (cv2) is not installed", "opencv-contrib-python-headless", "make install")
    return cv2


@pytest.fixture(scope="module")
def caffe_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bvlc")
    _, shapes = deploy(224)  # aux heads included
    weights = random_weights(shapes)
    model_path = folder / "bvlc_googlenet.caffemodel"
    write_caffemodel(model_path, weights, name="GoogleNet")
    return folder, model_path, weights


def opencv_forward(folder, model_path, input_size, x: np.ndarray, outputs: list[str]) -> list[np.ndarray]:
    text, _ = deploy(input_size)
    proto = folder / f"deploy_{input_size}.prototxt"
    proto.write_text(text)
    net = opencv().dnn.readNetFromCaffe(str(proto), str(model_path))
    net.setInput(x)
    return [np.asarray(o) for o in net.forward(outputs)]


def rel(a, b) -> float:
    return float(np.abs(a - b).max() / np.abs(b).max())


def test_converted_caffemodel_equals_opencv(caffe_files, tmp_path, capsys):
    folder, model_path, _ = caffe_files
    out = tmp_path / "bvlc.safetensors"
    assert main(["convert", "--from", "caffe", str(model_path), str(out), "--json"]) == 0
    info = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert info["arch"] == "googlenet" and info["num_classes"] == 1000 and info["aux_logits"] is True
    assert info["preprocessing"]["channel_order"] == "BGR" and info["preprocessing"]["pixel_range"] == 255
    assert info["preprocessing"]["mean"] == [104.0, 117.0, 123.0]
    model = googlenet.load_model(out).eval()
    assert model.class_names[0] == "tench" and len(model.class_names) == 1000

    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 3, 224, 224)).astype(np.float32) * 50
    logits, aux1, aux2, trunk = opencv_forward(folder, model_path, 224, x, ["loss3/classifier", "loss1/classifier",
                                                                            "loss2/classifier", "inception_5b/output"])
    with torch.no_grad():
        ours = model(torch.from_numpy(x), with_aux=True)
    assert rel(ours.logits.numpy(), logits.reshape(1, -1)) < 1e-4
    assert rel(ours.aux1.numpy(), aux1.reshape(1, -1)) < 1e-4
    assert rel(ours.aux2.numpy(), aux2.reshape(1, -1)) < 1e-4
    # The trunk at two other input sizes (the classifier's 7x7 pool is for 224 only).
    for size in (160, 288):
        x = rng.standard_normal((1, 3, size, size)).astype(np.float32) * 50
        (trunk,) = opencv_forward(folder, model_path, size, x, ["inception_5b/output"])
        feats = {}
        handle = model.inception5b.register_forward_hook(lambda m, i, o: feats.setdefault("t", o))
        with torch.no_grad():
            model(torch.from_numpy(x))
        handle.remove()
        assert feats["t"].shape == trunk.shape
        assert rel(feats["t"].numpy(), trunk) < 1e-4


def test_legacy_v1_layers_and_legacy_shapes_read_the_same(caffe_files, tmp_path):
    _, model_path, weights = caffe_files
    legacy = tmp_path / "legacy.caffemodel"
    write_caffemodel(legacy, weights, legacy=True, legacy_shapes=True)
    a = googlenet.pretrained.bvlc.from_caffemodel(model_path)
    b = googlenet.pretrained.bvlc.from_caffemodel(legacy)
    for (k, v), (k2, v2) in zip(a.state_dict().items(), b.state_dict().items()):
        assert k == k2 and torch.equal(v, v2)


@pytest.mark.slow
def test_preprocessing_applied_exactly_once(caffe_files, tmp_path, capsys):
    """predict on a photo equals the model run on the image made by hand as Caffe would: resize 256, centre crop
    224, RGB -> BGR, 0..255, minus (104, 117, 123). Twice or not at all would not match. Then eval's top-1 / top-5,
    the 144 crops and int8 (ONNX Runtime) against the same hand-made computation."""
    from torchvision.transforms.v2 import functional as TF

    _, _, weights = caffe_files
    model_path = tmp_path / "soft.caffemodel"  # a small classifier: softmax far from one-hot, so probs compare
    soft = {**weights, "loss3/classifier": [w * s for w, s in zip(weights["loss3/classifier"], (3e-3, 0.0))]}
    write_caffemodel(model_path, soft)
    out = tmp_path / "bvlc.safetensors"
    assert main(["convert", "--from", "caffe", str(model_path), str(out), "--drop-aux"]) == 0
    rng = np.random.default_rng(1)
    photo = tmp_path / "photo.png"
    arr = np.zeros((300, 400, 3), np.uint8)
    arr[..., 0], arr[..., 1], arr[..., 2] = 250, 120, 10  # strongly coloured: the channel order matters
    arr = (arr * 0.6 + rng.integers(0, 100, arr.shape)).astype(np.uint8)
    Image.fromarray(arr).save(photo)
    capsys.readouterr()
    assert main(["predict", str(photo), "--weights", str(out), "--json", "--topk", "3"]) == 0
    got = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["predictions"][0]["topk"]

    img = TF.center_crop(TF.resize(torch.from_numpy(arr).permute(2, 0, 1), [256], antialias=True), [224])
    x = img.float().flip(0) - torch.tensor([104.0, 117.0, 123.0]).view(3, 1, 1)
    model = googlenet.load_model(out).eval()
    with torch.no_grad():
        probs = torch.softmax(model(x.unsqueeze(0)), 1)[0]
    top = torch.topk(probs, 3)
    assert [t["index"] for t in got] == top.indices.tolist()
    assert max(abs(t["prob"] - p) for t, p in zip(got, top.values.tolist())) < 1e-5
    assert probs.max() < 0.5  # not saturated: a wrong input would show in the probabilities
    for wrong in (img.float() - torch.tensor([104.0, 117.0, 123.0]).view(3, 1, 1),  # no BGR flip
                  img.float().flip(0) - 2 * torch.tensor([104.0, 117.0, 123.0]).view(3, 1, 1),  # mean twice
                  img.float().flip(0) / 255):  # torchvision's 0..1 scale
        with torch.no_grad():
            assert (torch.softmax(model(wrong[None]), 1)[0] - probs).abs().max() > 1e-4

    # export to ONNX carries the preprocessing; ONNX Runtime on the same input agrees.
    onnx_path = tmp_path / "bvlc.onnx"
    assert main(["export", "--weights", str(out), "--format", "onnx", "--out", str(onnx_path)]) == 0
    import onnx
    import onnxruntime as ort

    meta = {p.key: p.value for p in onnx.load(str(onnx_path)).metadata_props}
    assert json.loads(meta["googlenet.preprocessing"])["channel_order"] == "BGR"
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    ort_logits = session.run(None, {session.get_inputs()[0].name: x.unsqueeze(0).numpy()})[0]
    with torch.no_grad():
        assert rel(ort_logits, model(x.unsqueeze(0)).numpy()) < 1e-4
    # eval on a folder: the photo filed under the class the hand-made input ranks first, under its fourth, and
    # under its last. Top-1 is then 1 of 3 and top-5 2 of 3, only if eval feeds the same pixels.
    order = torch.argsort(probs, descending=True).tolist()
    data = tmp_path / "data" / "val"
    names = model.class_names
    for k in (order[0], order[3], order[-1]):
        (data / names[k]).mkdir(parents=True)
        Image.fromarray(arr).save(data / names[k] / "a.png")
    assert main(["eval", "--weights", str(out), "--data", str(tmp_path / "data"), "--json"]) == 0
    ev = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert ev["images"] == 3 and abs(ev["top1"] - 1 / 3) < 1e-9 and abs(ev["top5"] - 2 / 3) < 1e-9, ev

    # 144 crops (section 7), written out here: shorter side 256 / 288 / 320 / 352; left, centre and right squares;
    # in each the 4 corners, the centre and the whole square at 224; each mirrored; softmax averaged.
    chw = torch.from_numpy(arr).permute(2, 0, 1)
    crops = []
    for scale in (256, 288, 320, 352):
        h, w = scale, scale * 400 // 300
        im = TF.resize(chw, [h, w], antialias=True)
        for left in (0, round((w - scale) / 2), w - scale):
            sq = im[:, :, left:left + scale]
            c, m = 224, scale - 224
            five = [sq[:, :c, :c], sq[:, :c, m:], sq[:, m:, :c], sq[:, m:, m:],
                    sq[:, round(m / 2):round(m / 2) + c, round(m / 2):round(m / 2) + c]]
            six = five + [TF.resize(sq, [c, c], antialias=True)]
            crops += six + [t.flip(-1) for t in six]
    assert len(crops) == 144
    batch = torch.stack(crops).float().flip(1) - torch.tensor([104.0, 117.0, 123.0]).view(1, 3, 1, 1)
    with torch.no_grad():
        probs144 = torch.softmax(model(batch), 1).mean(0)
    assert main(["predict", str(photo), "--weights", str(out), "--crops", "144", "--json"]) == 0
    got144 = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["predictions"][0]["topk"]
    assert [t["index"] for t in got144] == torch.argsort(probs144, descending=True)[:5].tolist()
    # measured: 1.2e-10 from the hand-made 144, while the 144 crops move the probabilities 1.2e-5 from the one
    # centre crop; 10 or 1 crops, or another square or scale, would miss by that much
    assert max(abs(t["prob"] - float(probs144[t["index"]])) for t in got144) < 1e-7
    assert (probs144 - probs).abs().max() > 1e-6

    # int8 through ONNX Runtime (the third party): its probabilities near the float ones of the hand-made input.
    assert main(["predict", str(photo), "--weights", str(out), "--precision", "int8", "--backend", "onnxruntime",
                 "--json"]) == 0
    int8_top = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["predictions"][0]["topk"]
    assert len(int8_top) == 5
    # measured: 1.0e-5 from the float probabilities; a wrong preprocessing moves them by more than 1e-4 (above)
    assert max(abs(t["prob"] - float(probs[t["index"]])) for t in int8_top) < 5e-5
    assert int8_top[0]["index"] in order[:2]


def test_hostile_caffemodels_are_one_line(caffe_files, tmp_path, capsys):
    _, model_path, weights = caffe_files
    truncated = tmp_path / "truncated.caffemodel"
    truncated.write_bytes(model_path.read_bytes()[:100_000])
    huge = tmp_path / "huge.caffemodel"  # field 100 (layer), length 3 GB, then 10 bytes
    huge.write_bytes(varint(100 << 3 | 2) + varint(3 * 1024 ** 3) + b"\x00" * 10)
    other = tmp_path / "alexnet.caffemodel"
    write_caffemodel(other, {"conv1": [torch.zeros(96, 3, 11, 11), torch.zeros(96)],
                             "loss3/classifier": [torch.zeros(1000, 1024), torch.zeros(1000)]})
    misshapen = tmp_path / "misshapen.caffemodel"
    bad = dict(weights)
    bad["inception_4c/5x5"] = [torch.zeros(64, 24, 3, 3), torch.zeros(64)]  # torchvision's 3x3 "5x5"
    write_caffemodel(misshapen, bad)
    text = tmp_path / "notes.caffemodel"
    text.write_text("not protobuf at all \xff")
    cases = {truncated: "not a Caffe model", huge: "not a Caffe model", other: "layer 'conv1/7x7_s2' is missing",
             misshapen: "layer 'inception_4c/5x5' has blob shapes [(64, 24, 3, 3), (64,)], expected",
             tmp_path / "missing.caffemodel": "caffemodel not found"}
    with peak_rss_growth() as grown:
        for path, message in cases.items():
            capsys.readouterr()
            assert main(["convert", "--from", "caffe", str(path), str(tmp_path / "out.safetensors")]) == 2
            err = capsys.readouterr().err
            assert err.count("\n") == 1 and message in err and err.startswith("googlenet convert: error: "), err
    assert grown["kib"] < 200_000, grown  # KiB: no 3 GB allocation
    assert not (tmp_path / "out.safetensors").exists()
    assert main(["convert", "--from", "caffe", str(text), str(tmp_path / "out.safetensors")]) == 2


def test_lying_caffemodels_are_one_line_and_cheap(caffe_files, tmp_path, capsys):
    """Shapes whose product wraps around int64, zero classes, junk layers the net does not use (two million empty
    blobs), duplicate label names and a directory as the output: one line each, no traceback, little memory."""
    _, model_path, weights = caffe_files
    wrap = tmp_path / "wrap.caffemodel"  # loss3/classifier blob declaring [2^32, 2^32] (np.prod wraps to 0), no data
    shape = field(7, field(1, varint(1 << 32) + varint(1 << 32)))
    wrap.write_bytes(field(100, field(1, b"loss3/classifier") + field(7, shape)))
    zero = tmp_path / "zero.caffemodel"
    write_caffemodel(zero, dict(weights, **{"loss3/classifier": [torch.zeros(0, 1024), torch.zeros(0)]}))
    junk = tmp_path / "junk.caffemodel"
    junk.write_bytes(model_path.read_bytes() + field(100, field(1, b"junk") + field(7, b"") * 2_000_000))
    labels = tmp_path / "labels.txt"
    labels.write_text("cat\ndog\ncat\n")
    cases = [(wrap, [], "blob declares shape [4294967296, 4294967296] (18446744073709551616 values) but holds 0"),
             (zero, [], "'loss3/classifier' has weight shape [0, 1024], expected [classes, 1024]"),
             (model_path, ["--labels", str(labels)], "names 'cat' twice: class names must be unique")]
    with peak_rss_growth() as grown:
        for path, extra, message in cases:
            capsys.readouterr()
            assert main(["convert", "--from", "caffe", str(path), str(tmp_path / "out.safetensors"), *extra]) == 2
            err = capsys.readouterr().err
            assert err.count("\n") == 1 and message in err, err
        capsys.readouterr()
        assert main(["convert", "--from", "caffe", str(junk), str(tmp_path / "junk.safetensors")]) == 0
    assert grown["kib"] < 800_000, grown  # KiB; it took 1.3 GB before
    some_aux = tmp_path / "some_aux.caffemodel"
    write_caffemodel(some_aux, {k: v for k, v in weights.items() if k != "loss2/fc"})
    assert main(["convert", "--from", "caffe", str(some_aux), str(tmp_path / "out.safetensors")]) == 2
    assert "has some aux-head layers but not 'loss2/fc'; convert with --drop-aux" in capsys.readouterr().err
    assert main(["convert", "--from", "caffe", str(some_aux), str(tmp_path / "out.safetensors"), "--drop-aux"]) == 0
    (tmp_path / "dir").mkdir()
    assert main(["convert", "--from", "caffe", str(model_path), str(tmp_path / "dir")]) == 2
    assert "is a directory; give a file name" in capsys.readouterr().err


def test_bvlc_named_source_offline_is_one_line(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    import googlenet.pretrained.fetch as conv

    monkeypatch.setattr(conv, "reachable", lambda host, port, timeout: "network unreachable")
    assert main(["predict", str(tmp_path), "--weights", "bvlc"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "bvlc_googlenet.caffemodel" in err and "googlenet convert --from caffe" in err


def test_create_model_bvlc_from_the_hub_cache(caffe_files, tmp_path, monkeypatch):
    """``googlenet.create_model("googlenet", weights="bvlc")`` with BVLC's file already in torch.hub's cache: the
    caffemodel's blobs land in the paper's network, without the network, and BVLC's preprocessing comes with it."""
    _, model_path, weights = caffe_files
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr("socket.create_connection", lambda *a, **k: pytest.fail("network touched"))
    cache = tmp_path / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    (cache / "bvlc_googlenet.caffemodel").write_bytes(model_path.read_bytes())
    model = googlenet.create_model("googlenet", weights="bvlc")
    assert not model.training and model.preprocessing["mean"] == [104.0, 117.0, 123.0]
    assert model.preprocessing["channel_order"] == "BGR" and (cache / "bvlc_googlenet.safetensors").is_file()
    conv1 = np.asarray(weights["conv1/7x7_s2"][0], dtype=np.float32)  # Caffe's own blob, read back by the test
    assert np.array_equal(model.conv1.conv.weight.detach().numpy(), conv1.reshape(model.conv1.conv.weight.shape))
    head = googlenet.create_model("googlenet", weights="bvlc", num_classes=20)
    assert head.fc.weight.shape == (20, 1024) and torch.equal(head.conv1.conv.weight, model.conv1.conv.weight)
