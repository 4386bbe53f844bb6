"""report.html in a real browser (issue 16): headless Chromium loads the page at laptop width, every
figure decodes, and the page does not scroll sideways (wide tables scroll in their own box).
Skipped, with the reason, where no Chromium is installed; CI installs Debian's (scripts/test.sh)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from entropic_tune.report import write_report

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
BROWSER = next((b for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None)

# Appended to a copy of the page: once the page has loaded, it writes what it found into the DOM,
# which --dump-dom prints.
PROBE = """<script>
window.addEventListener("load", () => {
  const images = [...document.images];
  const loaded = images.filter((i) => i.complete && i.naturalWidth > 0).length;
  const wide = document.documentElement.scrollWidth;
  const out = document.createElement("pre");
  out.id = "render-check";
  out.textContent = `images=${images.length} loaded=${loaded} width=${wide} view=${window.innerWidth}`;
  document.body.appendChild(out);
});
</script>"""


@pytest.mark.skipif(BROWSER is None, reason="no Chromium on PATH (apt-get install chromium); CI installs it")
@pytest.mark.parametrize("fixture", ["passk", "ablate", "search"])
def test_report_html_renders_with_every_image_at_laptop_width(fixture, tmp_path):
    folder = Path(shutil.copytree(FIXTURES / fixture, tmp_path / fixture))
    page = Path(write_report(folder, fmt="html"))
    probe = tmp_path / "probe.html"
    probe.write_text(page.read_text(encoding="utf-8").replace("</body>", PROBE + "</body>"), encoding="utf-8")
    done = subprocess.run(
        [BROWSER, "--headless", "--no-sandbox", "--disable-gpu", "--window-size=900,1400",
         "--virtual-time-budget=10000", "--dump-dom", probe.as_uri()],
        capture_output=True, text=True, timeout=120,
    )
    found = re.search(r"images=(\d+) loaded=(\d+) width=(\d+) view=(\d+)", done.stdout)
    assert found, (done.returncode, done.stderr[-2000:])
    images, loaded, width, view = map(int, found.groups())
    figures = len(list((folder / "figures").glob("*.png")))
    assert images == figures > 0 and loaded == images
    assert width <= view, f"the page scrolls sideways: {width}px of content in a {view}px window"
