"""Every notebook, run in JupyterLab in a real (headless) Chromium, the way a learner runs it.

For each notebook: open it, wait for the kernel (the status bar's "Idle", not the toolbar's dot, which
says idle before the kernel is ready), Run All, wait until every code cell has an execution count, then
fail on any error output, traceback, "Error displaying widget", widget still "Loading widget...", or
page/console error (the Colab and Binder badge images, which cannot load offline, excepted). In 02 the
explorer's toggle and slider must each change the figure. A failing notebook leaves a full-page
screenshot in build/browser/ (or $RBDLIB_BROWSER_ARTIFACTS).
"""

import re
import time
from urllib.parse import urlparse

import pytest
from conftest import NOTEBOOKS

RUN_TIMEOUT_S = 600          # one notebook, all cells, smoke size, on a busy 2-core CPU
BADGE_HOSTS = {"colab.research.google.com", "mybinder.org"}

CELLS_JS = """() => {
  const notebook = window.jupyterapp.shell.currentWidget.content;
  return notebook.widgets.map((cell, index) => {
    const model = cell.model;
    if (model.type !== 'code') return {index, type: model.type};
    const outputs = [];
    for (let i = 0; i < model.outputs.length; i++) outputs.push(model.outputs.get(i).toJSON());
    return {index, type: 'code', count: model.executionCount, source: model.sharedModel.getSource(),
            errors: outputs.filter(o => o.output_type === 'error').map(o => o.ename + ': ' + o.evalue)};
  });
}"""


def _kernel_idle(page) -> bool:
    status = page.locator("#jp-main-statusbar").text_content() or ""
    return "Python 3" in status and re.search(r"\|\s*Idle(?![a-z])", status) is not None


def _wait(condition, timeout_s: float, what: str, poll_s: float = 0.5):
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(poll_s)


def _is_badge(message) -> bool:
    url = (message.location or {}).get("url", "")
    return urlparse(url).hostname in BADGE_HOSTS


def _open(page, lab, name):
    page.goto(f"{lab.url}/lab/tree/{name}?token={lab.token}&reset")
    page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=120_000)
    _wait(lambda: _kernel_idle(page), 180, "the kernel to start (status bar 'Idle')")


def _run_all(page):
    page.evaluate("""() => { window.__runAll = undefined;
        window.jupyterapp.commands.execute('notebook:run-all-cells').then(
            ok => { window.__runAll = String(ok); }, e => { window.__runAll = 'error: ' + e; }); }""")
    _wait(lambda: page.evaluate("() => window.__runAll") is not None, RUN_TIMEOUT_S, "Run All to finish", 1)
    _wait(lambda: _kernel_idle(page), 120, "the kernel to become idle after Run All")


def _check(page, console_errors):
    cells = page.evaluate(CELLS_JS)
    code = [c for c in cells if c["type"] == "code"]
    assert code, "no code cells rendered"
    unrun = [c["index"] for c in code if not isinstance(c["count"], int)]
    errors = [f"cell {c['index']}: {e}" for c in code for e in c["errors"]]
    assert not errors, "error outputs:\n" + "\n".join(errors)
    assert not unrun, f"code cells without an execution count after Run All: {unrun}"
    notebook = page.locator(".jp-Notebook")
    # widgets render asynchronously after their cell finished
    _wait(lambda: "Loading widget..." not in (notebook.text_content() or ""), 60, "widgets to render")
    text = notebook.text_content() or ""
    assert "Error displaying widget" not in text
    assert "Traceback (most recent call last)" not in text
    assert not console_errors, "page or console errors:\n" + "\n".join(console_errors)


def _explorer_figure(cell):
    return cell.locator(".jp-OutputArea-output img").last.get_attribute("src")


def _check_explorer(page):
    """02's explorer: the d toggle and the azimuth slider must each redraw the figure."""
    cell = page.locator(".jp-CodeCell").filter(has_text="subspace_explorer(")
    assert cell.count() == 1, "the explorer cell of 02 was not found"
    cell.scroll_into_view_if_needed()
    before = _explorer_figure(cell)
    assert before and before.startswith("data:image/png"), "the explorer shows no PNG figure"
    toggle = {d: cell.locator("button.widget-toggle-button", has_text=re.compile(rf"^\s*{d}\s*$")) for d in (1, 2)}
    toggle[1].click()
    try:
        _wait(lambda: _explorer_figure(cell) != before, 60, "the figure to change after switching d to 1")
    except AssertionError:   # once, in a CI run at load 7, the first click changed the button and never reached
        toggle[2].click()    # the kernel (a rerun passed); a second try tells a lost click from a broken redraw
        toggle[1].click()
        _wait(lambda: _explorer_figure(cell) != before, 60, "the figure to change after switching d to 1 (twice)")
    after_toggle = _explorer_figure(cell)
    handle = cell.locator(".noUi-handle").first
    handle.focus()
    for _ in range(4):
        handle.press("ArrowRight")
    _wait(lambda: _explorer_figure(cell) != after_toggle, 60, "the figure to change after moving the azimuth slider")
    readout = cell.locator(".widget-readout").first.text_content()
    assert readout.strip() != "30", f"the azimuth slider did not move (readout {readout!r})"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_in_jupyterlab(path, lab, browser, artifacts):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    console_errors = []
    page.on("console", lambda m: m.type == "error" and not _is_badge(m) and
            console_errors.append(f"console: {m.text} ({(m.location or {}).get('url', '')})"))
    page.on("pageerror", lambda e: console_errors.append(f"page error: {e}"))
    try:
        _open(page, lab, path.name)
        _run_all(page)
        _check(page, console_errors)
        if path.stem == "02_random_subspaces":
            _check_explorer(page)
            assert not console_errors, "page or console errors:\n" + "\n".join(console_errors)
    except BaseException:
        page.screenshot(path=str(artifacts / f"{path.stem}.png"), full_page=True)
        raise
    finally:
        context.close()
        lab.delete_sessions()


def test_the_checks_catch_a_failing_cell(lab, browser):
    """The suite's own control: a notebook whose second cell raises must fail the checks above."""
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell("x = 1"), nbformat.v4.new_code_cell("raise ValueError('on purpose')"),
                nbformat.v4.new_code_cell("y = 2")]
    nbformat.write(nb, lab.root / "zz_control.ipynb")
    context = browser.new_context()
    page = context.new_page()
    try:
        _open(page, lab, "zz_control.ipynb")
        _run_all(page)
        with pytest.raises(AssertionError, match="ValueError: on purpose"):
            _check(page, [])
    finally:
        context.close()
        lab.delete_sessions()
