"""Build the whole book once (executing every notebook) and check the result, in a browser too.

`make test` runs this at XMODALITY_PROFILE=smoke. The HTML goes to _build/smoke/_build/html (so
`make book`'s cpu build in _build/html is left alone), screenshots to _build/screenshots/.
"""

from __future__ import annotations

import functools
import http.server
import os
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.book

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "_build" / "smoke"
HTML = OUT / "_build" / "html"
SCREENSHOTS = ROOT / "_build" / "screenshots"
MATHJAX = ROOT / "book" / "_mathjax" / "es5" / "tex-chtml.js"
JUPYTER_BOOK = Path(sys.executable).with_name("jupyter-book")
BROWSER_PAGES = ["book/intro", "notebooks/04_diffusion_math", "notebooks/09_volume_reconstruction"]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# <script src=...> or <link href=...> with an absolute URL (thebe's URL is only a JS string,
# fetched when a reader clicks "live code", which needs Binder and the network anyway)
REMOTE_ASSET = re.compile(r"<(?:script|link)\b[^>]*\b(?:src|href)=[\"'](?:https?:)?//[^\"']+")


def _toc_files() -> list[str]:
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [toc["root"]]

    def walk(entries):
        for entry in entries:
            files.extend([entry["file"]] if "file" in entry else [])
            walk(entry.get("sections", []))

    for part in toc.get("parts", [{"chapters": toc.get("chapters", [])}]):
        walk(part["chapters"])
    return files


def _build(source: Path, out: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    shutil.rmtree(out / "_build", ignore_errors=True)  # a stale page must not pass for a new one
    cmd = [str(JUPYTER_BOOK), "build", "--all", str(source), "--builder", "html",
           "--path-output", str(out)]
    return subprocess.run(cmd, cwd=source, env=env, capture_output=True, text=True, timeout=3600)


def _tail(result: subprocess.CompletedProcess, n: int = 60) -> str:
    return "\n".join((result.stdout + result.stderr).splitlines()[-n:])


@pytest.fixture(scope="session")
def book() -> subprocess.CompletedProcess:
    if not MATHJAX.is_file():
        pytest.fail(f"{MATHJAX} is missing: run `make env` (it fetches MathJax 3.2.2 with npm)")
    env = {**os.environ, "XMODALITY_PROFILE": os.environ.get("XMODALITY_PROFILE", "smoke")}
    result = _build(ROOT, OUT, env)
    (ROOT / "_build").mkdir(exist_ok=True)
    (ROOT / "_build" / "smoke-build.log").write_text(result.stdout + result.stderr)
    return result


@pytest.fixture(scope="session")
def pages(book) -> dict[Path, str]:
    assert book.returncode == 0, _tail(book)
    return {p: p.read_text(encoding="utf-8") for p in HTML.rglob("*.html")}


def test_build_succeeds(book):
    reports = "\n".join(p.read_text()[-3000:] for p in (HTML / "reports").glob("**/*.log")) \
        if (HTML / "reports").is_dir() else ""
    assert book.returncode == 0, f"{_tail(book)}\n{reports}"
    assert "build succeeded" in book.stdout
    assert "kernel_waits: " in book.stdout  # the extension ran in jupyter-book's process


def test_one_page_per_toc_entry(pages):
    toc = _toc_files()
    assert len(toc) >= 15, toc
    for entry in toc:
        page = HTML / f"{entry}.html"
        assert page in pages, f"no HTML page for _toc.yml entry {entry!r}"
        assert "<h1" in pages[page], f"{page} has no title: an empty page"
    assert (HTML / "index.html").is_file()


def test_mathjax_is_local_never_a_cdn(pages):
    for page, html in pages.items():
        assert "cdn.jsdelivr" not in html and "mathjax@" not in html, f"{page} names a CDN MathJax"
        remote = REMOTE_ASSET.findall(html)
        assert remote == [], f"{page} loads remote scripts or styles"
    math_page = pages[HTML / "notebooks" / "04_diffusion_math.html"]
    assert '_static/es5/tex-chtml.js' in math_page
    assert (HTML / "_static" / "es5" / "tex-chtml.js").is_file()
    assert (HTML / "_static" / "es5" / "output" / "chtml" / "fonts" / "woff-v2").is_dir()


def test_no_failed_cell_in_any_page(pages):
    for page, html in pages.items():
        assert "Traceback (most recent call last)" not in html, page
        assert "ModuleNotFoundError" not in html, page


def test_a_failing_cell_fails_the_build(tmp_path):
    """Our `execute` settings (raise_on_error) turn a cell error into a failed build."""
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    (tmp_path / "_config.yml").write_text(yaml.safe_dump(
        {"title": "t", "execute": config["execute"], "only_build_toc_files": True}))
    (tmp_path / "_toc.yml").write_text("format: jb-book\nroot: intro\nchapters:\n  - file: bad\n")
    (tmp_path / "intro.md").write_text("# Intro\n")
    import nbformat

    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# Bad"),
                                         nbformat.v4.new_code_cell("1 / 0")])
    nb.metadata.kernelspec = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, tmp_path / "bad.ipynb")
    result = _build(tmp_path, tmp_path, dict(os.environ))
    assert result.returncode != 0, _tail(result)
    assert "ZeroDivisionError" in result.stdout + result.stderr


@pytest.fixture(scope="session")
def server(pages):
    handler = functools.partial(_QuietHandler, directory=str(HTML))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (`make env` apt-installs it)")
@pytest.mark.parametrize("entry", BROWSER_PAGES)
def test_page_renders_offline_in_a_browser(server, entry):
    playwright = pytest.importorskip("playwright.sync_api")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    external, failed = [], []
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
            "--disable-background-networking", "--no-first-run"])
        page = browser.new_page(viewport={"width": 1280, "height": 1000})

        def route(r):  # the book must not need the network to render
            if r.request.url.startswith(server) or r.request.url.startswith("data:"):
                r.continue_()
            else:
                external.append(r.request.url)
                r.abort()

        page.route("**/*", route)
        page.on("requestfailed", lambda r: failed.append(r.url))
        page.goto(f"{server}/{entry}.html", wait_until="load")
        has_math = page.evaluate("!!document.querySelector('script[src*=\"tex-chtml\"]')")
        if has_math:  # Sphinx adds MathJax only to pages with maths
            page.wait_for_function("window.MathJax?.startup?.promise", timeout=30_000)
            page.evaluate("MathJax.startup.promise")
        page.evaluate("document.querySelectorAll('img').forEach(i => i.loading = 'eager')")
        page.wait_for_function("[...document.images].every(i => i.complete)", timeout=30_000)
        broken = page.evaluate(
            "[...document.images].filter(i => i.naturalWidth === 0).map(i => i.src)")
        n_math = page.evaluate("document.querySelectorAll('mjx-container').length")
        # the offline 3-D view (lesson 9): matplotlib's to_jshtml slice scroller, stepped once
        scroller = page.evaluate("""() => {
            const s = document.querySelector('input.anim-slider');
            if (!s) return null;
            const img = () => [...document.querySelectorAll('img[id^="_anim_img"]')].map(i => i.src).join();
            const before = img();
            s.value = String(Number(s.max)); s.dispatchEvent(new Event('input'));
            s.dispatchEvent(new Event('change'));
            return {frames: Number(s.max) + 1, moved: img() !== before};
        }""")
        text = page.evaluate("document.querySelector('main, article, body').innerText")
        page.screenshot(path=str(SCREENSHOTS / f"{Path(entry).name}.png"), full_page=True)
        browser.close()
    assert external == [], f"{entry} requested the network"
    assert [u for u in failed if u.startswith(server)] == [], f"{entry}: failed requests"
    assert broken == [], f"{entry}: images that did not load"
    if "04_diffusion_math" in entry:
        assert has_math and n_math > 0, "no equation typeset by MathJax"
    assert "$$" not in text, f"{entry} shows raw TeX"
    if "09_volume" in entry:
        assert scroller is not None, "lesson 9 has no offline slice scroller"
        assert scroller["frames"] > 1 and scroller["moved"], f"the scroller does not scroll: {scroller}"
