"""``--precision auto``: the verdict and its reason from the probe's step times; other requests pass through."""

import pytest

from googlenet.precision import MIN_GAIN, resolve_precision


@pytest.mark.parametrize("fp32_ms, bf16_ms, expected", [(176, 154, "bf16"), (200, 200, "fp32"), (150, 200, "fp32"),
                                                        (106, 100, "bf16"), (104, 100, "fp32")])
def test_auto_on_cpu_picks_bf16_only_when_its_step_is_faster_by_the_margin(fp32_ms, bf16_ms, expected):
    times = {"fp32": fp32_ms / 1000, "bf16": bf16_ms / 1000}
    precision, reason = resolve_precision("auto", "cpu", step_seconds=times.__getitem__)
    assert precision == expected
    assert reason == (f"auto: a training step took {fp32_ms:.0f} ms in fp32 and {bf16_ms:.0f} ms in bf16 on this CPU "
                      f"({fp32_ms / bf16_ms:.2f}x; bf16 needs >= {MIN_GAIN}x)")


def test_explicit_precision_and_cpu_without_probe():
    assert resolve_precision("bf16", "cpu") == ("bf16", "as requested")
    assert resolve_precision("auto", "cpu") == ("fp32", "auto: fp32 on cpu")


# --- The kept verdict (issue: same seed, same machine, same weights) ------------------------------------------------

import json

import torch

import googlenet.precision as precision_mod
from googlenet.precision import CACHE_VERSION, PrecisionCache, probe_key

KEY_ARGS = dict(arch="googlenet_bn", input_size=64, batch_size=8, channels_last=False, compile=False)


def timer(fp32_ms, bf16_ms, calls=None):
    def step_seconds(p):
        if calls is not None:
            calls.append(p)
        return {"fp32": fp32_ms, "bf16": bf16_ms}[p] / 1000
    return step_seconds


def test_a_kept_verdict_is_taken_without_timing_anything(tmp_path):
    cache, key = PrecisionCache(tmp_path), probe_key(**KEY_ARGS)
    first = resolve_precision("auto", "cpu", timer(200, 100), key=key, cache=cache)
    assert first[0] == "bf16" and "fresh probe, kept in" in first[1] and cache.path(key).is_file()
    calls = []
    # The machine is now loaded so that bf16 looks slower: the kept verdict wins and nothing is timed.
    again = resolve_precision("auto", "cpu", timer(100, 200, calls), key=key, cache=cache)
    assert again[0] == "bf16" and calls == [] and "kept from the probe of" in again[1]
    assert again[1].startswith("auto: a training step took 200 ms in fp32 and 100 ms in bf16")


def test_reprobe_times_again_and_overwrites(tmp_path, monkeypatch):
    cache, key = PrecisionCache(tmp_path), probe_key(**KEY_ARGS)
    resolve_precision("auto", "cpu", timer(200, 100), key=key, cache=cache)
    calls = []
    p, why = resolve_precision("auto", "cpu", timer(100, 200, calls), key=key, cache=cache, reprobe=True)
    assert (p, calls) == ("fp32", ["fp32", "bf16"]) and "re-probed" in why
    assert json.loads(cache.path(key).read_text())["precision"] == "fp32"
    monkeypatch.setenv("GOOGLENET_REPROBE", "1")
    calls.clear()
    assert resolve_precision("auto", "cpu", timer(200, 100, calls), key=key, cache=cache)[0] == "bf16"
    assert calls == ["fp32", "bf16"]


def test_the_key_changes_with_each_of_its_parts(tmp_path, monkeypatch):
    cache = PrecisionCache(tmp_path)
    base = cache.path(probe_key(**KEY_ARGS))
    changed = {"arch": "googlenet", "input_size": 96, "batch_size": 16, "channels_last": True, "compile": True}
    paths = {base}
    for name, value in changed.items():
        paths.add(cache.path(probe_key(**{**KEY_ARGS, name: value})))
    monkeypatch.setattr(precision_mod, "cpu_identity", lambda: "another CPU | 2 cpus | avx2")
    paths.add(cache.path(probe_key(**KEY_ARGS)))
    monkeypatch.undo()
    monkeypatch.setattr(torch, "__version__", "9.9.9")
    paths.add(cache.path(probe_key(**KEY_ARGS)))
    assert len(paths) == 2 + len(changed) + 1


def test_cpu_identity_names_the_model_and_the_flags():
    ident = precision_mod.cpu_identity()
    model, cpus, flags = ident.split(" | ")
    assert model and cpus.endswith("cpus")
    if "avx512_bf16" in open("/proc/cpuinfo").read():
        assert "avx512_bf16" in flags.split()


@pytest.mark.parametrize("content", [b"\x00\xff not json", b'{"version": 1}', b"[]", "other version", "other key",
                                     "bad precision"])
def test_a_bad_cache_file_is_ignored_and_rewritten(tmp_path, content):
    cache, key = PrecisionCache(tmp_path), probe_key(**KEY_ARGS)
    good = {"version": CACHE_VERSION, "key": key, "precision": "fp32", "reason": "r", "probed": "then"}
    if content == "other version":
        content = json.dumps({**good, "version": CACHE_VERSION + 1}).encode()
    elif content == "other key":
        content = json.dumps({**good, "key": {**key, "arch": "googlenet"}}).encode()
    elif content == "bad precision":
        content = json.dumps({**good, "precision": "int4"}).encode()
    tmp_path.mkdir(exist_ok=True)
    cache.path(key).write_bytes(content)
    calls = []
    p, why = resolve_precision("auto", "cpu", timer(200, 100, calls), key=key, cache=cache)
    assert (p, calls) == ("bf16", ["fp32", "bf16"]) and "fresh probe" in why
    entry = json.loads(cache.path(key).read_text())
    assert entry["version"] == CACHE_VERSION and entry["key"] == key and entry["precision"] == "bf16"


def test_a_cache_that_cannot_be_written_costs_only_a_probe(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    cache, key = PrecisionCache(blocker / "precision"), probe_key(**KEY_ARGS)
    assert resolve_precision("auto", "cpu", timer(200, 100), key=key, cache=cache)[0] == "bf16"
    calls = []
    assert resolve_precision("auto", "cpu", timer(200, 100, calls), key=key, cache=cache)[0] == "bf16"
    assert calls == ["fp32", "bf16"]


def test_the_cache_folder_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.delenv("GOOGLENET_PRECISION_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert PrecisionCache().folder == tmp_path / "xdg" / "googlenet" / "precision"
    monkeypatch.setenv("GOOGLENET_PRECISION_CACHE", str(tmp_path / "own"))
    assert PrecisionCache().folder == tmp_path / "own"


def test_explicit_precisions_and_gpus_never_touch_the_cache(tmp_path):
    cache, key = PrecisionCache(tmp_path), probe_key(**KEY_ARGS)
    assert resolve_precision("fp32", "cpu", timer(200, 100), key=key, cache=cache) == ("fp32", "as requested")
    assert not cache.path(key).exists()
