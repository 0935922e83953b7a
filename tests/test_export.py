"""Export: torchvision -> ours -> ONNX -> ONNX Runtime parity with a dynamic batch, ceil-mode pooling at other sizes,
TorchScript round trip, flag and tolerance failures, and weights refusals by every command that takes weights."""

import json
import sys

import onnx
import onnxruntime as ort
import pytest
import torch
from safetensors.torch import save_file

import googlenet
from googlenet.weights import read_metadata
from tests.hostile import bare_hostile_pickle, hostile_pickle
from tests.test_convert import randomise_, run_cli, torchvision_model

ORT_TOLERANCE = 1e-4



def ort_runner(path):
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda x: torch.from_numpy(session.run(None, {name: x.numpy()})[0])


def assert_inference_graph(path):
    """onnx.checker passes, the batch axis is symbolic, the aux heads are absent, every max pool rounds up."""
    onnx.checker.check_model(str(path), full_check=True)
    proto = onnx.load(str(path))
    (inp,), (out,) = proto.graph.input, proto.graph.output
    assert inp.name == "images" and out.name == "logits"
    assert inp.type.tensor_type.shape.dim[0].dim_param  # dynamic batch: a named dimension, not a number
    assert not [i.name for i in proto.graph.initializer if "aux" in i.name]
    pools = [n for n in proto.graph.node if n.op_type == "MaxPool"]
    assert len(pools) == 4 + 9  # 4 stride-2 pools + one per inception module
    assert all(a.i == 1 for n in pools for a in n.attribute if a.name == "ceil_mode")
    return proto


def random_weights_file(tmp_path, arch, num_classes=1000, **metadata):
    model = randomise_(googlenet.create_model(arch, num_classes=num_classes))
    return model, googlenet.save_model(model, tmp_path / f"{arch}.safetensors", **metadata)


# One input size per arch, so the parity runs also cover ceil-mode pooling away from 224: at 160 and 299 the stride-2
# pools see odd maps (160: 80 -> 40 -> 20 -> 10 -> 5; 299: 150 -> 75 -> 38 -> 19 -> 10), where rounding up versus down
# changes every later shape, so a wrong ceil export shows as a shape error or a large difference.
SIZES = {"googlenet_tv": 224, "googlenet": 160, "googlenet_bn": 299}


@pytest.mark.slow
@pytest.mark.parametrize("arch", list(SIZES))
def test_onnx_runtime_matches_pytorch_with_dynamic_batch(tmp_path, capsys, arch):
    size = SIZES[arch]
    if arch == "googlenet_tv":  # the whole chain: torchvision's model -> convert -> ours -> ONNX -> ONNX Runtime
        reference = torchvision_model(aux_logits=True, seed=3)
        torch.save(reference.state_dict(), tmp_path / "tv.pth")
        weights = tmp_path / "tv.safetensors"
        assert run_cli(capsys, "convert", "--from", "torchvision", tmp_path / "tv.pth", weights)[0] == 0
    else:
        reference, weights = random_weights_file(tmp_path, arch, num_classes=10)
    code, out, err = run_cli(capsys, "export", "--weights", weights, "--out", tmp_path / "m.onnx", "--json",
                             "--input-size", size)
    assert code == 0, err
    report = json.loads(out.strip().splitlines()[-1])
    assert report["checked_batches"] == [1, 3] and report["batch"] == "dynamic" and report["opset"] == 17
    assert report["max_abs_diff"] <= ORT_TOLERANCE
    proto = assert_inference_graph(tmp_path / "m.onnx")
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta["googlenet.arch"] == arch and json.loads(meta["googlenet.preprocessing"])["input_size"] == size

    run = ort_runner(tmp_path / "m.onnx")
    g = torch.Generator().manual_seed(7)
    for n in (1, 3):  # one file, two batch sizes
        x = torch.randn(n, 3, size, size, generator=g)
        with torch.no_grad():
            want = reference(x)
        got = run(x)
        diff = (got - want).abs().max().item()
        print(f"{arch} at {size}: ONNX Runtime vs {'torchvision' if arch == 'googlenet_tv' else 'PyTorch'}, batch "
              f"{n}: max abs diff {diff:.2e} (logits up to {want.abs().max():.1f}); export reported "
              f"{report['max_abs_diff']:.2e}")
        assert got.shape == want.shape and want.abs().max() > 1.0 and diff <= ORT_TOLERANCE


@pytest.fixture(scope="module")
def small_weights(tmp_path_factory):
    folder = tmp_path_factory.mktemp("w")
    model, path = random_weights_file(folder, "googlenet_bn", num_classes=5, class_names=list("abcde"))
    return model, path


def test_torchscript_round_trip(tmp_path, capsys, small_weights):
    model, weights = small_weights
    out_file = tmp_path / "m.pt"
    code, out, err = run_cli(capsys, "export", "--weights", weights, "--format", "torchscript", "--out", out_file,
                             "--input-size", "64", "--json")
    assert code == 0, err
    report = json.loads(out.strip().splitlines()[-1])
    assert report["checked_batches"] == [1, 3] and report["max_abs_diff"] <= ORT_TOLERANCE
    extra = {"googlenet.json": ""}
    loaded = torch.jit.load(str(out_file), _extra_files=extra)
    meta = json.loads(extra["googlenet.json"])
    assert json.loads(meta["googlenet.class_names"]) == list("abcde")
    assert not [n for n, _ in loaded.named_parameters() if "aux" in n]
    for shape in ((2, 3, 64, 64), (1, 3, 96, 80)):  # scripted: any batch and input size
        x = torch.randn(shape)
        with torch.no_grad():
            torch.testing.assert_close(loaded(x), model(x), atol=ORT_TOLERANCE, rtol=0)


@pytest.mark.parametrize("flags, message", [
    (["--opset", "5"], "--opset must be in [11, 20], got 5"),
    (["--opset", "99"], "--opset must be in [11, 20], got 99"),
    (["--batch", "0"], "argument --batch: expected 'dynamic' or a positive integer, got 0"),
    (["--batch", "many"], "argument --batch: expected 'dynamic' or a positive integer, got 'many'"),
    (["--input-size", "32"], "--input-size must be in [64, 2048], got 32"),
    (["--format", "tflite"], "argument --format: invalid choice: 'tflite'"),
    (["--format", "torchscript", "--opset", "17"], "--opset and --dynamo apply to --format onnx only"),
])
def test_export_bad_flags_are_one_line(tmp_path, capsys, small_weights, flags, message):
    code, out, err = run_cli(capsys, "export", "--weights", small_weights[1], "--out", tmp_path / "m.onnx", *flags)
    assert code == 2 and message in err and err.count("\n") == 1, err
    assert not (tmp_path / "m.onnx").exists()


def test_export_beyond_tolerance_fails_and_writes_nothing(tmp_path, capsys, monkeypatch, small_weights):
    out_file = tmp_path / "m.onnx"
    out_file.write_text("previous export")
    monkeypatch.setattr("googlenet.export.TOLERANCE", 1e-12)  # ORT's float rounding (~1e-6 here) exceeds this
    code, out, err = run_cli(capsys, "export", "--weights", small_weights[1], "--out", out_file, "--input-size", 64)
    assert code == 2 and err.count("\n") == 1
    assert "exported onnx model differs from PyTorch by" in err and f"tolerance 1e-12); {out_file} not written" in err
    assert out_file.read_text() == "previous export" and not list(tmp_path.glob(".*.tmp"))


def test_export_without_onnxruntime_or_onnx(tmp_path, capsys, monkeypatch, small_weights):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # "import onnxruntime" now raises ImportError
    code, out, err = run_cli(capsys, "export", "--weights", small_weights[1], "--out", tmp_path / "m.onnx",
                             "--input-size", 64, "--batch", 2, "--json")
    assert code == 0 and 'not compared with PyTorch: pip install "googlenet[export]"' in err
    report = json.loads(out.strip().splitlines()[-1])
    assert report["max_abs_diff"] is None and report["checked_batches"] == [] and report["batch"] == 2
    dims = onnx.load(str(tmp_path / "m.onnx")).graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_value for d in dims] == [2, 3, 64, 64]  # a fixed batch

    monkeypatch.setitem(sys.modules, "onnx", None)
    code, out, err = run_cli(capsys, "export", "--weights", small_weights[1], "--out", tmp_path / "n.onnx")
    assert code == 2 and err == 'googlenet export: error: ONNX export needs the onnx package: ' \
                                'pip install "googlenet[export]"\n'


def bad_weights_files(folder, model_path):
    """Files that claim to be weights and are not: hostile pickles, a truncated file, lying metadata."""
    marker = folder / "pwned"
    files = {"hostile pickle (torch.save zip)": hostile_pickle(folder / "zip.safetensors", marker),
             "hostile pickle (bare)": bare_hostile_pickle(folder / "bare.pth", marker)}
    data = model_path.read_bytes()
    (folder / "truncated.safetensors").write_bytes(data[: len(data) // 2])
    files["truncated"] = folder / "truncated.safetensors"
    meta = read_metadata(model_path)
    from safetensors.torch import load_file

    tensors = load_file(str(model_path))
    for name, change in {"wrong arch": {"arch": "googlenet"}, "unknown arch": {"arch": "resnet50"},
                         "wrong class count": {"num_classes": 7, "class_names": None}}.items():
        path = folder / f"{name.replace(' ', '_')}.safetensors"
        save_file(tensors, str(path), metadata={"googlenet": json.dumps({**meta, **change})})
        files[name] = path
    return marker, files


EXPECTED = {"hostile pickle (torch.save zip)": "is not a valid googlenet weights file (safetensors)",
            "hostile pickle (bare)": "is not a valid googlenet weights file (safetensors)",
            "truncated": "is not a valid googlenet weights file (safetensors)",
            "wrong arch": "does not fit googlenet: keys",
            "unknown arch": "unknown arch 'resnet50'",
            "wrong class count": "does not fit googlenet_bn: "}


def test_every_command_refuses_bad_weights_without_running_them(tmp_path, capsys, small_weights):
    from PIL import Image

    marker, files = bad_weights_files(tmp_path, small_weights[1])
    (tmp_path / "data" / "a").mkdir(parents=True)
    Image.new("RGB", (80, 80), (200, 10, 10)).save(tmp_path / "data" / "a" / "x.png")
    image, data = tmp_path / "data" / "a" / "x.png", tmp_path / "data"
    commands = {"export": lambda w: ["export", "--weights", w, "--out", tmp_path / "m.onnx"],
                "predict": lambda w: ["predict", image, "--weights", w],
                "eval": lambda w: ["eval", "--weights", w, "--data", data, "--workers", 0],
                "bench": lambda w: ["bench", "infer", "--weights", w, "--input-size", 64, "--rounds", 1]}
    for command, argv in commands.items():
        for kind, path in files.items():
            code, out, err = run_cli(capsys, *argv(path))
            assert code == 2 and err.count("\n") == 1, (command, kind, err)
            assert err.startswith(f"googlenet {command}: error: ") and EXPECTED[kind] in err, (command, kind, err)
            if kind == "wrong class count":
                assert "has shape (5" in err and "expected (7" in err  # the 5-class tensors vs the claimed 7
    # convert reads .pth checkpoints: the hostile ones are refused there too (tests/test_convert.py covers the rest)
    for kind in ("hostile pickle (torch.save zip)", "hostile pickle (bare)"):
        pth = tmp_path / "checkpoint.pth"
        pth.write_bytes(files[kind].read_bytes())
        code, out, err = run_cli(capsys, "convert", "--from", "torchvision", pth, tmp_path / "c.safetensors")
        assert code == 2 and "nothing in it was run" in err
    assert not marker.exists()
    assert not (tmp_path / "m.onnx").exists() and not (tmp_path / "c.safetensors").exists()
