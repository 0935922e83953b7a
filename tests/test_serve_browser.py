"""The demo page in a real browser: upload a held-out image through the page, wait for five result rows, and check
that the top label is the one ``googlenet predict`` gives for the same image and weights."""

import json

import pytest
from PIL import Image

from googlenet.cli import main
from googlenet.data.embedded import load_fashion
from tests.browser import chromium_driver
from tests.serving import server

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trained_like_weights(tmp_path_factory):
    import torch

    import googlenet
    from googlenet.data.embedded import CLASS_NAMES

    torch.manual_seed(1)
    path = tmp_path_factory.mktemp("page") / "w.safetensors"
    model = googlenet.create_model("googlenet_bn", num_classes=10, aux_logits=False)
    pre = {"input_size": 64, "resize_size": 64, "interpolation": "bilinear", "mean": [0.286] * 3, "std": [0.353] * 3}
    googlenet.save_model(model, path, class_names=CLASS_NAMES, preprocessing=pre)
    return path


def test_page_upload_shows_top5_equal_to_predict(trained_like_weights, tmp_path, capsys):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    _, held_out = load_fashion()  # a held-out Fashion-MNIST image, saved as a user would upload it
    photo = tmp_path / "held_out.png"
    Image.fromarray(held_out.images[7].numpy()).resize((112, 112)).save(photo)
    assert main(["predict", str(photo), "--weights", str(trained_like_weights), "--json"]) == 0
    expected = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["predictions"][0]["topk"][0]["label"]

    with server(trained_like_weights) as (url, _):
        driver = chromium_driver()
        try:
            driver.get(url + "/")
            driver.find_element(By.ID, "file").send_keys(str(photo))
            WebDriverWait(driver, 60).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#rows .row")) == 5)
            names = [e.text for e in driver.find_elements(By.CSS_SELECTOR, "#rows .row .name")]
            probs = [float(e.text.rstrip("%")) for e in driver.find_elements(By.CSS_SELECTOR, "#rows .row .prob")]
            assert names[0] == expected
            assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 100.01
            assert driver.execute_script("return document.getElementById('preview').naturalWidth") == 112
            assert "1 crop(s) used" in driver.find_element(By.ID, "crops").text
            assert driver.find_element(By.ID, "error").text == ""
            driver.save_screenshot(str(tmp_path / "serve_page.png"))
            assert (tmp_path / "serve_page.png").stat().st_size > 10_000
        finally:
            driver.quit()
