"""Headless Chromium for the gallery tests: a page plus an inline test script, the script's answer as JSON.

`chromium --headless --dump-dom` prints the page's DOM once it has loaded and, with `--virtual-time-budget`,
once its pending work (image loads, promises, timers) is done. The test script, inserted before the page's
`</body>` in a copy next to it (so that its relative links resolve the same way), writes its answer as JSON
into `<pre id="test-answer">`, which `run_page` reads back from the dump.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
import time

import tensorflow as tf

ANSWER = re.compile(r'<pre id="test-answer">(.*?)</pre>', re.S)


def chromium_or_skip(test: tf.test.TestCase) -> str:
    """The path of `chromium`; without it the test fails in CI (`CI=true`, where .ci/run installs it), else skips."""
    path = shutil.which("chromium")
    if path:
        return path
    reason = "no chromium for the gallery's browser test (Debian: apt-get install chromium)"
    if os.environ.get("CI") == "true":
        test.fail(f"{reason}; CI must have it")
    test.skipTest(reason)


def run_page(chromium: str, page: str, script: str, budget_ms: int = 60_000) -> tuple[dict, float]:
    """Opens a copy of `page` with `script` (JavaScript, run after the page's own) appended; returns its answer.

    With `budget_ms` 0 the DOM is read at the load event (for a script that answers at once, in real time).

    Returns:
        (the JSON object the script wrote into `#test-answer`, the browser's wall time in seconds).
    """
    with open(page, encoding="utf-8") as file:
        text = file.read()
    harness = f"<script>{script}</script></body>"
    copy = os.path.join(os.path.dirname(page), ".test-harness.html")
    with open(copy, "w", encoding="utf-8") as file:
        file.write(text.replace("</body>", harness, 1))
    try:
        with tempfile.TemporaryDirectory() as profile:
            begin = time.monotonic()
            done = subprocess.run(
                [
                    chromium,
                    "--headless",
                    "--no-sandbox",  # Root in CI containers.
                    "--disable-gpu",
                    f"--user-data-dir={profile}",
                    *([f"--virtual-time-budget={budget_ms}"] if budget_ms else []),
                    "--window-size=1280,900",
                    "--dump-dom",
                    "file://" + os.path.abspath(copy),
                ],
                capture_output=True,
                text=True,
                timeout=180,
            )
            seconds = time.monotonic() - begin
    finally:
        os.remove(copy)
    found = ANSWER.search(done.stdout)
    if not found:
        raise AssertionError(f"no test answer in the page (exit {done.returncode}): {done.stderr[-2000:]}")
    return json.loads(found.group(1).replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")), seconds


# Helpers for the test scripts: the cards in their shown order, and a control's change.
PRELUDE = r"""
function shownMaps() {
  return [...document.querySelectorAll("#cards .card")].filter((c) => !c.hidden).map((c) => Number(c.dataset.map));
}
function choose(id, value) {
  const control = document.getElementById(id);
  control.value = value;
  control.dispatchEvent(new Event(control.tagName === "INPUT" ? "input" : "change"));
}
function answer(value) {
  const pre = document.createElement("pre");
  pre.id = "test-answer";
  pre.textContent = JSON.stringify(value);
  document.body.appendChild(pre);
}
"""
