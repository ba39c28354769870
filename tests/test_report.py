"""``mlmprep report``: the HTML page parsed, and rendered in a real headless browser."""

import base64
import html.parser
import io
import shutil
import subprocess
import sys

import numpy as np
import pytest

from conftest import run_job

pytest.importorskip("matplotlib", reason="mlmprep report needs the [report] extra")
Image = pytest.importorskip("PIL.Image")

PLOT_COLORS = {"train": (0x1F, 0x77, 0xB4), "validation": (0xFF, 0x7F, 0x0E)}  # report.COLORS


class _Page(html.parser.HTMLParser):
    """The page's headings, images, table cells and warning items."""

    def __init__(self):
        super().__init__()
        self.headings, self.images, self.cells, self.warnings = [], [], [], []
        self._in, self._warnings = None, False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img":
            self.images.append(attrs)
        if tag == "div" and attrs.get("class") == "warnings":
            self._warnings = True
        self._in = tag

    def handle_endtag(self, tag):
        if tag == "div":
            self._warnings = False
        self._in = None

    def handle_data(self, data):
        if self._in == "h2":
            self.headings.append(data)
        elif self._in == "td":
            self.cells.append(data)
        elif self._in == "li" and self._warnings:
            self.warnings.append(data)


@pytest.fixture(scope="module")
def reported(tmp_path_factory, real_data, bert_vocab):
    """A report of Chinese fortunes and KJV through an English vocabulary: (output, manifest, page path)."""
    root = tmp_path_factory.mktemp("report")
    tiny = real_data / "corpora" / "tiny"
    manifest = run_job(
        root / "out",
        f"--input={tiny / 'fortunes_zh.txt'}",
        f"--input={tiny / 'kjv.txt'}",
        f"--tokenizer={bert_vocab}",
        "--validation_fraction=0.3",
    )
    page = root / "report.html"
    done = subprocess.run(
        [sys.executable, "-m", "mlmprep.pipeline.cli", "report", str(root / "out"), f"--output={page}"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert "WARNING: [UNK] is" in done.stdout
    return root / "out", manifest, page


@pytest.mark.slow
def test_the_page_holds_the_counts_plots_warnings_and_examples(reported):
    out, manifest, page = reported
    parsed = _Page()
    text = page.read_text(encoding="utf-8")
    parsed.feed(text)
    assert parsed.headings == [
        "Warnings", "Counts", "Slot utilization", "Sequence lengths", "Document lengths", "Replacements",
        "Examples",
    ]  # fmt: skip
    # Self-contained: every image is an embedded PNG that decodes, and nothing is fetched from elsewhere.
    assert len(parsed.images) == 4
    for image in parsed.images:
        assert image["src"].startswith("data:image/png;base64,")
        png = Image.open(io.BytesIO(base64.b64decode(image["src"].split(",", 1)[1])))
        assert png.width > 500 and png.height > 200
    assert "http://" not in text and "https://" not in text
    train = manifest["counts"]["splits"]["train"]
    unk_rate = train["unk_tokens"] / train["tokens"]
    fill = train["tokens"] / (train["tokens"] + train["padding"])
    assert f"{unk_rate:.2%}" in parsed.cells and f"{fill:.1%}" in parsed.cells
    assert f"{manifest['counts']['documents_read']:,}" in parsed.cells
    assert any(w.startswith(f"[UNK] is {unk_rate:.1%} of the train tokens") for w in parsed.warnings)
    assert any("--packing best_fit fills them" in w for w in parsed.warnings)
    assert f"{train['pieces'] / train['sequences']:.2f}" in parsed.cells  # pieces per sequence
    # The observed 80/10/10, and examples with their masks marked.
    shares = [float(c.rstrip("%")) for c in parsed.cells if c.endswith("%") and c[0].isdigit()]
    assert any(abs(s - 80) < 3 for s in shares) and any(abs(s - 10) < 3 for s in shares)
    assert text.count('<span class="mask">[MASK→') > 10


@pytest.mark.skipif(shutil.which("chromium") is None, reason="no Chromium (apt-get install chromium)")
@pytest.mark.slow
def test_the_plots_render_in_a_headless_browser(reported, tmp_path):
    _, _, page = reported
    shot = tmp_path / "page.png"
    done = subprocess.run(
        ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
         "--window-size=1100,2600", f"--screenshot={shot}", page.as_uri()],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0 and shot.exists(), done.stderr
    pixels = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    for split, color in PLOT_COLORS.items():
        # Only the plots' bars and legends have these colors: the page's own styles have none of them.
        drawn = np.sum(np.abs(pixels - np.array(color)).max(axis=-1) < 8)
        assert drawn > 5000, f"the {split} bars are not on the screen ({drawn} pixels)"
    # The same page with its images taken out shows none of them: the check sees the plots, not the page.
    bare = tmp_path / "bare.html"
    bare.write_text(
        "".join(
            part.split(">", 1)[1] if i else part for i, part in enumerate(page.read_text().split("<img "))
        ),
        encoding="utf-8",
    )
    bare_shot = tmp_path / "bare.png"
    subprocess.run(
        ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--window-size=1100,2600",
         f"--screenshot={bare_shot}", bare.as_uri()],
        capture_output=True, timeout=120, check=True,
    )  # fmt: skip
    pixels = np.asarray(Image.open(bare_shot).convert("RGB")).astype(int)
    assert np.sum(np.abs(pixels - np.array(PLOT_COLORS["train"])).max(axis=-1) < 8) < 100


def test_report_of_a_folder_without_a_manifest_is_one_line(tmp_path):
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "mlmprep.pipeline.cli",
            "report",
            str(tmp_path),
            f"--output={tmp_path / 'r.html'}",
        ],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2 and "no manifest.json" in done.stderr and "Traceback" not in done.stderr
