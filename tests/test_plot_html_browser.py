"""The HTML figure opened as a person would: in a real headless Chromium (Debian's package,
scripts/browser.sh; scripts/test.sh installs it as root), with name resolution off so nothing
can be fetched. The page must draw (plotly's SVG and the 3D surface's WebGL canvas in the DOM,
coloured pixels in both plot areas of a screenshot) and log no console error; clicking its own
log10 button and metric menu changes what the figure holds."""

from __future__ import annotations

import importlib
import re
import shutil
import subprocess

import numpy as np
import pytest

pytest.importorskip("plotly", reason='the [html] extra: pip install "landscape_hpc[html]"')

from test_plot_html import make_surface  # noqa: E402

plot = importlib.import_module("landscape_hpc.plot")  # the command (lh.plot: the function)

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="chromium is not installed (as root: scripts/browser.sh, which scripts/test.sh runs)",
)
WIDTH, HEIGHT = 1400, 700
#: console lines that mean the page is broken (an exception, a script or resource not loaded)
CONSOLE_ERROR = re.compile(r"Uncaught|Error:|ERR_|Failed to load|is not defined", re.I)


def chromium(page, tmp_path, *args: str) -> subprocess.CompletedProcess:
    """Chromium, headless, software WebGL (SwiftShader: no GPU needed), every host name
    unresolvable (offline), its console on stderr."""
    command = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",  # as root (CI)
        "--use-gl=swiftshader",
        "--enable-unsafe-swiftshader",
        "--host-resolver-rules=MAP * ~NOTFOUND",
        "--hide-scrollbars",
        "--virtual-time-budget=5000",  # let plotly finish drawing before the capture
        f"--user-data-dir={tmp_path / 'profile'}",
        "--enable-logging=stderr",
        "--v=0",
        f"--window-size={WIDTH},{HEIGHT}",
        *args,
        page.resolve().as_uri(),
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=180)


def console_errors(stderr: str) -> list[str]:
    return [
        line for line in stderr.splitlines() if ":CONSOLE" in line and CONSOLE_ERROR.search(line)
    ]


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    folder = tmp_path_factory.mktemp("html")
    surface = make_surface(folder / "s.h5")
    assert plot.main([str(surface), "--kind", "html"]) == 0
    return folder / "s_surface.html"


def test_the_page_draws_both_views_offline_without_console_errors(page, tmp_path):
    from PIL import Image

    shot = tmp_path / "shot.png"
    run = chromium(page, tmp_path, f"--screenshot={shot}")
    assert shot.exists(), run.stderr[-3000:]
    assert console_errors(run.stderr) == []
    pixels = np.asarray(Image.open(shot).convert("RGB"), dtype=np.int16)
    assert pixels.shape == (HEIGHT, WIDTH, 3)
    # the plot areas: the 3D scene on the left, the contours on the right (below the menus);
    # viridis is saturated, plotly's background, grid and text are near grey
    for name, area, least in (
        ("3D surface", pixels[150:550, 100:650], 0.04),
        ("contours", pixels[150:550, 760:1280], 0.3),
    ):
        saturated = (area.max(axis=2) - area.min(axis=2) > 80).mean()
        assert saturated > least, (name, saturated)


def test_the_dom_holds_plotly_svg_and_the_webgl_canvas(page, tmp_path):
    run = chromium(page, tmp_path, "--dump-dom")
    dom = run.stdout
    assert dom.count('class="main-svg"') >= 2, run.stderr[-3000:]
    assert "<canvas" in dom  # the 3D surface's WebGL canvas
    assert dom.count('class="contourlevel"') > 0  # the contour lines were computed and drawn
    assert console_errors(run.stderr) == []


def test_the_console_check_catches_a_broken_page(tmp_path):
    # the check above could pass by reading nothing: a page calling plotly without it
    broken = tmp_path / "broken.html"
    broken.write_text("<html><body><div id=p></div><script>Plotly.newPlot('p', [])</script>")
    run = chromium(broken, tmp_path, "--dump-dom")
    assert console_errors(run.stderr), run.stderr[-3000:]
    assert 'class="main-svg"' not in run.stdout


#: test glue: clicks the page's own plotly buttons as a person would (log10, then the metric
#: menu's test_acc) and writes what the figure then holds into the DOM
PROBE = """<script>
const later = (f) => new Promise((r) => setTimeout(() => { f(); r(); }, 300));
const click = (el) => el.dispatchEvent(new MouseEvent('click', {bubbles: true}));
const find = (sel, text) =>
  Array.from(document.querySelectorAll(sel)).find((b) => b.textContent.trim() === text);
window.addEventListener('load', () => {
  setTimeout(async () => {
    const gd = document.querySelector('.plotly-graph-div'), seen = {};
    click(find('.updatemenu-button', 'log10'));
    await later(() => {
      seen.z = gd.data.filter((t) => t.type === 'contour').map((t) => [t.name, t.z]);
    });
    click(document.querySelector('.updatemenu-header'));
    await later(() => {});
    click(find('.updatemenu-dropdown-button', 'test_acc'));
    await later(() => {
      seen.visible = gd.data.filter((t) => t.visible === true).map((t) => t.name);
    });
    const out = document.createElement('pre');
    out.id = 'probe';
    out.textContent = JSON.stringify(seen);
    document.body.appendChild(out);
  }, 1000);
});
</script></body>"""


def test_clicking_log10_and_the_metric_menu_changes_what_is_drawn(page, tmp_path):
    import html as html_lib
    import json

    import h5py

    probe = tmp_path / "probe.html"
    probe.write_text(page.read_text().replace("</body>", PROBE, 1))
    run = chromium(probe, tmp_path, "--dump-dom")
    found = re.search(r'<pre id="probe">([^<]*)</pre>', run.stdout)
    assert found, run.stderr[-3000:]
    seen = json.loads(html_lib.unescape(found.group(1)))
    with h5py.File(page.parent / "s.h5") as f:
        for name, z in seen["z"]:
            drawn = np.array([[np.nan if v is None else v for v in row] for row in z])
            data = f[name][()]
            expected = np.log10(data) if name.endswith("_loss") else data  # accuracy stays
            np.testing.assert_allclose(drawn, expected, rtol=1e-15)
    assert sorted(n for n, _ in seen["z"]) == ["test_acc", "test_loss", "train_acc", "train_loss"]
    assert seen["visible"] == ["test_acc", "test_acc", "trajectory", "lr drop"]
    assert console_errors(run.stderr) == []
