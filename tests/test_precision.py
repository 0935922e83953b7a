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
