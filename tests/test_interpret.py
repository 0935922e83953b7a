"""googlenet.interpret: layer names, feature visualisation, DeepDream, Captum attribution and their commands."""

from __future__ import annotations

import contextlib
import json
import sys

import pytest
import torch

from googlenet.cli import main
from googlenet.errors import UserError
from googlenet.interpret import ModelInput, dream, explain, layer_names, visualize
from googlenet.interpret.common import LayerCapture
from googlenet.interpret.visualize import channel_means
from googlenet.models import create_model
from googlenet.weights import attach_metadata, default_preprocessing, save_model
from tests.system_packages import missing


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = create_model("googlenet", num_classes=4).eval()
    attach_metadata(m, {"preprocessing": default_preprocessing(64), "class_names": list("abcd")})
    return m


@pytest.mark.parametrize("arch", ["googlenet", "googlenet_bn", "googlenet_tv"])
def test_layer_names_are_the_models_own(arch):
    names = layer_names(create_model(arch, num_classes=3))
    for n in ("conv1", "inception4c", "inception4c.branch3", "inception5b"):
        assert n in names
    assert not any(n.startswith(("fc", "aux1", "dropout")) for n in names)


def test_unknown_layer_is_one_user_error(model):
    with pytest.raises(UserError, match="no layer 'inception9z'"):
        visualize(model, "inception9z", [0], steps=1, size=32)
    with pytest.raises(UserError, match="channel 600 out of range: inception4c has 512 channels"):
        visualize(model, "inception4c", [600], steps=1, size=32)


def test_visualize_raises_its_channel_and_is_deterministic(model):
    layer = "inception4c.branch1.conv"  # before the ReLU: no channel of the random net is dead
    before = visualize(model, layer, [3, 7], steps=1, size=48, seed=1, transforms=False)
    # Without the random transforms the measured objective is exactly the optimised one.
    after = visualize(model, layer, [3, 7], steps=24, size=48, seed=1, transforms=False)
    jittered = visualize(model, layer, [3, 7], steps=4, size=48, seed=1)
    assert after.shape == (2, 3, 48, 48) and 0 <= after.min() and after.max() <= 1
    assert torch.equal(jittered, visualize(model, layer, [3, 7], steps=4, size=48, seed=1))
    small = torch.nn.functional.interpolate(after, size=(64, 64), mode="bilinear", align_corners=False)
    small0 = torch.nn.functional.interpolate(before, size=(64, 64), mode="bilinear", align_corners=False)
    a, a0 = channel_means(model, layer, small), channel_means(model, layer, small0)
    assert a[0, 3] > a0[0, 3] and a[1, 7] > a0[1, 7]
    assert a[0, 3] > a[1, 3] and a[1, 7] > a[0, 7]  # each image excites its own channel more than the other's


def test_visualize_grayscale_and_diversity(model):
    out = visualize(model, "inception3b", [5], steps=3, size=32, grayscale=True, diversity_images=2)
    assert out.shape == (2, 3, 32, 32)
    assert torch.equal(out[:, 0], out[:, 1]) and torch.equal(out[:, 1], out[:, 2])
    assert not torch.equal(out[0], out[1])


def test_model_input_reads_the_new_metadata_keys(model):
    m = create_model("googlenet", num_classes=2)
    attach_metadata(m, {"preprocessing": {**default_preprocessing(64), "channel_order": "BGR", "pixel_range": 255,
                                          "mean": [1.0, 2.0, 3.0], "std": [2.0, 2.0, 2.0], "grayscale": True}})
    prep = ModelInput(m)
    x = torch.tensor([0.1, 0.5, 0.9]).view(1, 3, 1, 1)
    assert prep.grayscale and torch.allclose(prep(x).flatten(), torch.tensor([(229.5 - 1) / 2, (127.5 - 2) / 2,
                                                                              (25.5 - 3) / 2]))
    assert not ModelInput(m, grayscale=False).grayscale


def test_dream_raises_the_layer_energy(model):
    img = torch.rand(3, 64, 64, generator=torch.Generator().manual_seed(0)) * 0.5 + 0.25
    out = dream(model, img, "inception3b", octaves=2, steps=4)

    def energy(x):
        with torch.no_grad(), LayerCapture(model, "inception3b", stop=True) as cap:
            return float(cap.run(ModelInput(model)(x[None])).pow(2).mean())

    assert out.shape == img.shape and 0 <= out.min() and out.max() <= 1
    assert energy(out) > 1.2 * energy(img)


def test_integrated_gradients_completeness(model):
    pytest.importorskip("captum")
    img = torch.rand(3, 64, 64, generator=torch.Generator().manual_seed(1))
    heat, target, e = explain(model, img, "integrated-gradients", steps=50)
    assert heat.shape == (64, 64) and 0 <= target < 4
    # A random net's logits are nearly flat (gap ~0.003), so its relative completeness error is not meaningful;
    # the 5% figure on trained weights is in docs/interpret.md. Here: our gap agrees with Captum's own delta.
    assert abs(abs(e["attribution_sum"] - e["output_gap"]) - e["delta"]) < 1e-4


def test_integrated_gradients_doubles_its_steps_until_complete(model):
    # Sundararajan et al.'s completeness check: more steps while the attributions miss F(x) - F(0) by more than
    # the tolerance, up to max_steps. Tolerance 0 is never met: 4, 8, 16, then the cap of 20.
    pytest.importorskip("captum")
    img = torch.rand(3, 64, 64, generator=torch.Generator().manual_seed(1))
    _, _, never = explain(model, img, "integrated-gradients", steps=4, max_steps=20, tolerance=0.0)
    assert never["steps"] == 20 and never["converged"] is False
    assert never["completeness_error"] == pytest.approx(abs(never["attribution_sum"] - never["output_gap"])
                                                        / abs(never["output_gap"]))
    _, _, loose = explain(model, img, "integrated-gradients", steps=4, max_steps=20, tolerance=1e6)
    assert loose["steps"] == 4 and loose["converged"] is True
    # the error at the last step count is the one reported: 20 Gauss-Legendre steps, not the first 4
    _, _, direct = explain(model, img, "integrated-gradients", steps=20, max_steps=20, tolerance=1e6)
    assert never["attribution_sum"] == pytest.approx(direct["attribution_sum"], rel=1e-6)
    with pytest.raises(UserError, match="tolerance must be a number >= 0"):
        explain(model, img, "integrated-gradients", tolerance=-0.1)
    with pytest.raises(UserError, match="steps must be at least 1, got 0"):
        explain(model, img, "integrated-gradients", steps=0)


def test_gradcam_and_occlusion_maps(model):
    pytest.importorskip("captum")
    img = torch.rand(3, 64, 64, generator=torch.Generator().manual_seed(2))
    cam, t, _ = explain(model, img, "gradcam", target=2)
    occ, _, _ = explain(model, img, "occlusion", target=2)
    assert t == 2 and cam.shape == occ.shape == (64, 64) and cam.min() >= 0
    with pytest.raises(UserError, match="target class 9 out of range"):
        explain(model, img, "gradcam", target=9)


@pytest.mark.slow
def test_commands_write_pngs_and_refuse_bad_input(model, tmp_path, capsys):
    from PIL import Image

    w = save_model(model, tmp_path / "w.safetensors")
    Image.fromarray((torch.rand(50, 70, 3) * 255).byte().numpy()).save(tmp_path / "x.png")
    assert main(["visualize", "--weights", str(w), "--layer", "inception4a", "--channel", "1", "2", "--steps",
                 "2", "--size", "32", "--out", str(tmp_path / "vis")]) == 0
    assert sorted(p.name for p in (tmp_path / "vis").iterdir()) == ["inception4a_c1.png", "inception4a_c2.png",
                                                                    "inception4a_grid.png"]
    assert main(["dream", str(tmp_path / "x.png"), "--weights", str(w), "--layer", "inception3a", "--octaves", "2",
                 "--steps", "2", "--size", "64", "--out", str(tmp_path / "d.png")]) == 0
    assert Image.open(tmp_path / "d.png").size == (90, 64)  # 50x70 pixels, the shorter side to 64, aspect kept
    capsys.readouterr()
    assert main(["explain", str(tmp_path / "x.png"), "--weights", str(w), "--method", "gradcam",
                 "--out", str(tmp_path / "e.png")]) == 0
    assert json.loads(capsys.readouterr().out)["label"] in list("abcd")
    assert main(["visualize", "--weights", str(w), "--layer", "nope", "--channel", "0", "--out",
                 str(tmp_path / "v2")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no layer 'nope'" in err[0]
    assert main(["dream", str(tmp_path / "missing.png"), "--weights", str(w), "--layer", "conv1", "--out",
                 str(tmp_path / "d2.png")]) == 2
    capsys.readouterr()
    assert main(["dream", str(tmp_path / "x.png"), "--weights", str(w), "--layer", "conv1", "--octave-scale", "1",
                 "--out", str(tmp_path / "d3.png")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--octave-scale must be in (1, 4], got 1.0" in err[0]
    assert not (tmp_path / "d3.png").exists()
    assert main(["visualize", "--weights", str(w), "--layer", "conv1", "--channel", "0", "--decay-power", "nan",
                 "--out", str(tmp_path / "v3")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--decay-power must be in 0..4, got nan" in err[0]
    assert not (tmp_path / "v3").exists()


def _lucent_param_file(name):
    """One of lucent's parameterisation files (numpy and torch only), loaded alone: lucent's package __init__
    pulls in kornia, which the project does not install."""
    import importlib.util

    spec = importlib.util.find_spec("lucent")
    if spec is None:
        missing("torch-lucent is not installed", "torch-lucent 0.1.8 (pip --no-deps)", "make install")
    path = f"{spec.submodule_search_locations[0]}/optvis/param/{name}.py"
    mod_spec = importlib.util.spec_from_file_location(f"lucent_param_{name}", path)
    mod = importlib.util.module_from_spec(mod_spec)
    mod_spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("size, channels, decay_power", [(128, 3, 1.0), (96, 1, 1.5), (37, 3, 2.0)])
def test_fourier_image_and_colours_equal_lucents(size, channels, decay_power):
    from googlenet.interpret.visualize import FFTImage, to_pixels

    spatial, color = _lucent_param_file("spatial"), _lucent_param_file("color")
    ours = FFTImage(2, channels, size, decay_power=decay_power)
    params, lucent_image = spatial.fft_image((2, channels, size, size), decay_power=decay_power)
    with torch.no_grad():
        params[0].copy_(torch.randn(params[0].shape, generator=torch.Generator().manual_seed(size)))
        ours.spectrum.copy_(params[0][..., : ours.spectrum.shape[-2], :])  # lucent keeps a column irfft drops
        theirs = lucent_image()
        assert torch.allclose(ours(), theirs, atol=1e-6)  # same scale: it once was size (128) times stronger
        if channels == 3:
            assert torch.allclose(to_pixels(ours()), color.to_valid_rgb(lucent_image, decorrelate=True)(), atol=1e-6)


def test_neutral_pixel_is_what_the_normalisation_maps_to_zero(model):
    bgr = create_model("googlenet", num_classes=2)
    attach_metadata(bgr, {"preprocessing": {**default_preprocessing(64), "mean": [104.0, 117.0, 123.0],
                                            "std": [1.0, 1.0, 1.0], "channel_order": "BGR", "pixel_range": 255}})
    for m in (model, bgr):
        prep = ModelInput(m)
        assert prep(prep.neutral_pixels().expand(1, 3, 4, 4)).abs().max() < 1e-5
    assert torch.allclose(ModelInput(bgr).neutral_pixels().flatten(), torch.tensor([123.0, 117.0, 104.0]) / 255)


def test_restarts_keep_the_best_start_of_each_image(model):
    from googlenet.interpret.common import LayerCapture

    channels = [3, 7, 11]
    # without the random transforms: each start's draws aside, restarts=1 for 3x the images gives the candidates
    best = visualize(model, "inception3a", channels, steps=4, size=32, restarts=3, seed=5, transforms=False)
    assert best.shape == (3, 3, 32, 32)
    all_starts = visualize(model, "inception3a", channels * 3, steps=4, size=32, seed=5, transforms=False)
    with torch.no_grad(), LayerCapture(model, "inception3a", stop=True) as cap:
        def score(images):  # as the PNG is read: at the model's 64 px, antialiased
            x = torch.nn.functional.interpolate(images, size=(64, 64), mode="bilinear", align_corners=False,
                                                antialias=True)
            act = cap.run(ModelInput(model)(x))
            return torch.stack([act[i, c].mean() for i, c in enumerate(channels * (len(images) // 3))])

        picked = score(all_starts).view(3, 3).argmax(0)
        assert torch.allclose(best, all_starts.view(3, 3, 3, 32, 32)[picked, torch.arange(3)], atol=1e-6)
    with pytest.raises(ValueError, match="restarts keep the best"):
        visualize(model, "inception3a", [1], steps=1, size=32, restarts=2, diversity_images=2)


def test_each_restart_draws_its_own_transforms(model, monkeypatch):
    """Starts that shared the transform draws settled in the same optimum: each start gets its own."""
    vis_module = sys.modules["googlenet.interpret.visualize"]
    batches, real = [], vis_module.robustness_transforms
    monkeypatch.setattr(vis_module, "robustness_transforms",
                        lambda x, g, pad: batches.append(len(x)) or real(x, g, pad))
    visualize(model, "inception3a", [3, 7], steps=2, size=32, restarts=3)
    assert batches == [2] * 6  # 2 steps x 3 starts, each a batch of the 2 channels
    batches.clear()
    visualize(model, "inception3a", [3, 7], steps=2, size=32)
    assert batches == [2, 2]
    with pytest.raises(ValueError, match="decay_power must be in 0..4, got 5"):
        visualize(model, "inception3a", [1], steps=1, size=32, decay_power=5)


def test_dream_size_is_the_images_own_raised_to_448_and_capped():
    from googlenet.cli.dream import dream_size

    assert dream_size((50, 70), None) == (448, 627)
    assert dream_size((1000, 1500), None) == (1000, 1500)  # a photo dreams at its own size, as in the notebook
    assert dream_size((1000, 4000), None) == (512, 2048)  # the longer side is capped
    assert dream_size((50, 70), 64) == (64, 90)
    with pytest.raises(UserError, match="--size 1000 makes the image's longer side 20000 px; at most 2048"):
        dream_size((50, 1000), 1000)


def test_dream_refuses_an_image_too_small_for_its_octaves_in_one_line(model, tmp_path, capsys):
    from PIL import Image

    w = save_model(model, tmp_path / "w.safetensors")
    Image.fromarray((torch.rand(50, 70, 3) * 255).byte().numpy()).save(tmp_path / "x.png")
    assert main(["dream", str(tmp_path / "x.png"), "--weights", str(w), "--layer", "inception4c", "--size", "16",
                 "--out", str(tmp_path / "d.png")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "too small to dream at inception4c: its smallest octave is 6x8 px" in err[0]
    assert not (tmp_path / "d.png").exists()


def test_dream_jitter_off_is_deterministic_and_seed_free(model):
    img = torch.rand(3, 64, 64, generator=torch.Generator().manual_seed(2))
    a = dream(model, img, "inception3a", octaves=1, steps=3, jitter=0, seed=0)
    b = dream(model, img, "inception3a", octaves=1, steps=3, jitter=0, seed=1)
    c = dream(model, img, "inception3a", octaves=1, steps=3, jitter=32, seed=1)
    assert torch.equal(a, b) and not torch.equal(a, c)  # without the roll the seed has nothing to draw


def test_redirected_relu_is_lucids_gradient_and_keeps_forward_values(model):
    from googlenet.interpret.visualize import RedirectedReLU, redirected_relus

    x = torch.tensor([[-1.0, 2.0], [-3.0, -4.0]], requires_grad=True)
    grad = torch.tensor([[-5.0, 7.0], [-1.0, 2.0]])
    RedirectedReLU.apply(x).backward(grad)
    # row 0 fired (its ReLU gradient 7 is non-zero): plain ReLU gradient; row 1 never fired: the gradient passes
    # where it would raise the input (-1) and is blocked where it would push a negative input lower (+2).
    assert torch.equal(x.grad, torch.tensor([[0.0, 7.0], [-1.0, 0.0]]))
    img = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        plain = model(img)
        with redirected_relus(model):
            hooked = model(img)
        assert torch.equal(plain, hooked) and torch.equal(plain, model(img))  # hooks gone after the block


def test_redirected_relu_lets_a_silent_channel_start(model):
    from googlenet.interpret.visualize import redirected_relus

    prep = ModelInput(model)
    x = torch.full((1, 3, 64, 64), 0.5, requires_grad=True)
    with LayerCapture(model, "inception3a.branch1", stop=True) as cap:
        act = cap.run(prep(x))
    silent = [c for c in range(act.shape[1]) if act[0, c].max() <= 0]
    assert silent, "the fixture has no channel that is off on a grey image"
    c = silent[0]
    grads = []
    for redirect in (False, True):
        x.grad = None
        ctx = redirected_relus(model) if redirect else contextlib.nullcontext()
        with ctx, LayerCapture(model, "inception3a.branch1", stop=True) as cap:
            (-cap.run(prep(x))[0, c].mean()).backward()  # a loss to minimise, as visualize does
        grads.append(x.grad.abs().sum().item())
    assert grads[0] == 0 and grads[1] > 0


@pytest.mark.parametrize("device, message", [("tpu", "--device must be cpu or cuda[:N], got 'tpu'"),
                                             ("cuda:x", "--device must be cpu or cuda[:N], got 'cuda:x'")])
def test_interpret_commands_refuse_a_bad_device_in_one_line(tmp_path, capsys, model, device, message):
    from PIL import Image

    w = save_model(model, tmp_path / "w.safetensors")
    Image.fromarray((torch.rand(50, 70, 3) * 255).byte().numpy()).save(tmp_path / "x.png")
    for argv in (["visualize", "--weights", str(w), "--layer", "conv1", "--channel", "0", "--out", str(tmp_path / "v")],
                 ["dream", str(tmp_path / "x.png"), "--weights", str(w), "--layer", "conv1", "--out",
                  str(tmp_path / "d.png")]):
        assert main(argv + ["--device", device]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0]
