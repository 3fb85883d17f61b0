"""tools/make_report.py's page in headless chromium: every embedded picture decodes at its
display size, the cards and the mIoU table render, the random-weights banner is red, and the
page logs no error."""
from __future__ import annotations

from browser import computed, open_page
from test_report import _tool, _write_run


def test_report_page_in_a_browser(tmp_path):
    run = _write_run(tmp_path, random1=True)
    done = _tool("--tags", run["tags"], "--masks", run["masks"], "--seg", run["seg"], "--tables", run["table"],
                 "--img-root", run["images"], "--classes", run["classes"], "--out", run["out"])
    assert done.returncode == 0, done.stderr
    with open_page(run["out"]) as (page, errors):
        images = page.eval_on_selector_all(
            "img", "imgs => imgs.map(i => [i.className, i.complete, i.naturalWidth, i.naturalHeight])")
        # per card: the photo, one CAM, three label maps; the CAM colour scale once per card
        assert sorted(c for c, *_ in images) == sorted(["photo", "cam", "mask", "mask", "mask", ""] * 2)
        assert all(complete and width > 0 and height > 0 for _, complete, width, height in images)
        assert [size for c, _, *size in images if c == "photo"] == [[160, 120]] * 2  # 32 x 24 shown at 160
        assert page.locator("section.card").count() == 2
        assert "mIoU 50.00" in page.inner_text("div.miou")
        assert page.eval_on_selector_all("div.miou table tr", "rows => rows.map(r => r.innerText.split('\\t'))") == [
            ["class", "IoU %", "Acc %"], ["background", "50.00", "60.00"]]
        assert computed(page, "div.banner", "backgroundColor") == ["rgb(198, 40, 40)"]
        assert errors == []
