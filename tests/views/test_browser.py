"""The playground in a real browser: notebooks/03_playground served by Voila and by JupyterLab on 127.0.0.1,
driven by Debian's headless Chromium through chromedriver (selenium), on the bundled local models.

Each run types a prompt, sets max_tokens, clicks Run, measures the time from the click to the first token
shown on the page, waits for the final answer, checks the layer slots, the trace, the timeline and the copied
settings, and saves a screenshot (the Voila one is README's picture: docs/images/playground.png).
`make test` installs chromium and chromedriver with apt-get when they are missing (tools/install_browser.sh);
without them these tests skip, saying why.
"""

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import free_port

ROOT = Path(__file__).resolve().parents[2]
#: The playground as README and the site show it: the Voila run's screenshot, written by this test.
PICTURE = ROOT / "docs" / "images" / "playground.png"
BIN = Path(sys.executable).parent
CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
PROMPT = "Name three colours of the rainbow."
FIRST_TOKEN_JS = """
const done = arguments[arguments.length - 1];
const final = document.querySelector('.moa-final');
const t0 = performance.now();
const seen = () => (final.querySelector('pre') || {textContent: ''}).textContent.length > 0;
const observer = new MutationObserver(() => { if (seen()) { observer.disconnect(); done(performance.now() - t0); } });
observer.observe(final, {childList: true, subtree: true, characterData: true});
document.querySelector('.moa-run').click();
"""

pytestmark = [pytest.mark.local, pytest.mark.browser, pytest.mark.timeout(420)]


def _wait_port(port: int, proc: subprocess.Popen, log: Path, seconds: float = 90) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited:\n{log.read_text()[-3000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"nothing listens on port {port} after {seconds}s:\n{log.read_text()[-3000:]}")


def _serve(kind: str, folder: Path, port: int) -> list[str]:
    if kind == "voila":
        return [
            str(BIN / "voila"),
            str(folder / "03_playground.ipynb"),
            "--no-browser",
            f"--port={port}",
            "--Voila.ip=127.0.0.1",
        ]
    return [
        str(BIN / "jupyter"),
        "lab",
        "--no-browser",
        f"--port={port}",
        "--ip=127.0.0.1",
        "--allow-root",
        f"--ServerApp.root_dir={folder}",
        "--IdentityProvider.token=",
        "--ServerApp.password=",
        f"--LabApp.workspaces_dir={folder.parent / 'workspaces'}",
        "--LabApp.news_url=None",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
    ]


def _servers_of(pid: int) -> list[int]:
    """PIDs of embedded llama.cpp servers (`python -m moa_lab serve`) whose environment names this test's marker."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            cmd = (proc / "cmdline").read_bytes().split(b"\0")
            if (
                b"moa_lab" in cmd
                and b"serve" in cmd
                and f"MOA_LAB_BROWSER_TEST={pid}".encode() in (proc / "environ").read_bytes()
            ):
                found.append(int(proc.name))
        except (OSError, ValueError):
            pass
    return found


@pytest.fixture
def browser(tmp_path):
    if not (CHROMIUM and CHROMEDRIVER):
        pytest.skip(
            "NO BROWSER TEST: chromium and chromedriver are not installed, and `make test` could not "
            "install them (apt-get install chromium chromium-driver). The playground was NOT tested "
            "in a browser."
        )
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1280,1900",
        f"--user-data-dir={tmp_path / 'chromium'}",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_script_timeout(240)
    yield driver
    driver.quit()


@pytest.mark.parametrize("kind", ["voila", "lab"])
def test_playground_in_a_browser(kind, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    folder = tmp_path / "served"  # a copy: JupyterLab may save the notebook it ran, and the repo's must stay clean
    folder.mkdir()
    shutil.copy(ROOT / "notebooks" / "03_playground.ipynb", folder)
    port, log = free_port(), tmp_path / f"{kind}.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TOGETHER_", "MOA_LAB_"))}
    env["MOA_LAB_BROWSER_TEST"] = str(os.getpid())
    with open(log, "wb") as out:
        server = subprocess.Popen(
            _serve(kind, folder, port),
            cwd=folder,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        url = f"http://127.0.0.1:{port}"
        _wait_port(port, server, log)
        wait = WebDriverWait(browser, 180, poll_frequency=0.2)
        find = browser.find_element
        if kind == "voila":
            browser.get(url + "/")
        else:
            browser.get(url + "/lab/tree/03_playground.ipynb")
            wait.until(lambda d: "Idle" in d.find_element(By.CSS_SELECTOR, "body").text)
            browser.find_element(By.XPATH, "//div[contains(@class,'lm-MenuBar-itemLabel') and text()='Run']").click()
            browser.find_element(
                By.XPATH, "//div[contains(@class,'lm-Menu-itemLabel') and text()='Run All Cells']"
            ).click()
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, ".moa-run"))

        prompt = find(By.CSS_SELECTOR, ".moa-prompt textarea")
        prompt.clear()
        prompt.send_keys(PROMPT)
        tokens = find(By.CSS_SELECTOR, ".moa-max-tokens input")
        tokens.send_keys(Keys.CONTROL, "a")
        tokens.send_keys("24", Keys.TAB)
        time.sleep(0.5)  # the values reach the kernel before the click (one websocket, in order)

        first_token_ms = browser.execute_async_script(FIRST_TOKEN_JS)
        wait.until(
            lambda d: (
                "Done:" in find(By.CSS_SELECTOR, ".moa-status").text
                or "Failed" in find(By.CSS_SELECTOR, ".moa-status").text
            )
        )
        status = find(By.CSS_SELECTOR, ".moa-status").text
        final = find(By.CSS_SELECTOR, ".moa-final").text
        print(f"\n[{kind}] click to first token shown: {first_token_ms / 1000:.2f} s; status: {status}")
        assert status.startswith("Done: 5 calls"), status
        assert final.strip(), "no final answer shown"
        slots = [e.text for e in browser.find_elements(By.CSS_SELECTOR, ".moa-slot")]
        assert len(slots) == 4 and all("tokens" in s for s in slots), slots
        trace = find(By.CSS_SELECTOR, ".moa-trace").text
        assert trace.count("smollm2-135m") + trace.count("gemma3-270m") == 5
        assert browser.execute_script("return document.querySelector('.moa-timeline').naturalHeight") > 100

        # The copied settings carry what was typed in the browser.
        browser.find_element(By.XPATH, "//button[text()='run_moa(...) call']").click()
        copied = "return document.querySelector('.moa-copy textarea').value"  # read at once: the HTML is replaced
        wait.until(lambda d: "run_moa(" in d.execute_script(copied))
        code = browser.execute_script(copied)
        assert repr(PROMPT) in code and "max_tokens=24" in code and "backend='local'" in code
        browser.execute_cdp_cmd(
            "Browser.grantPermissions", {"permissions": ["clipboardReadWrite", "clipboardSanitizedWrite"]}
        )
        find(By.CSS_SELECTOR, ".moa-copy-button").click()
        wait.until(
            lambda d: (
                d.execute_script("return document.querySelector('.moa-copy-button').textContent") != "Copy to clipboard"
            )
        )
        clipboard = browser.execute_async_script(
            "navigator.clipboard.readText().then(arguments[0], e => arguments[0]('unreadable: ' + e))"
        )
        assert clipboard == code, clipboard[:200]

        shot = tmp_path / f"playground-{kind}.png"
        browser.save_screenshot(str(shot))
        assert shot.stat().st_size > 10_000
        print(f"[{kind}] screenshot: {shot}")
        if kind == "voila":  # README's picture: what this run showed (commit it when it changes)
            PICTURE.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(shot, PICTURE)

        # Run again with another max_tokens (the same settings would be answered from the cache at once), and
        # Stop it while layer 1 runs: the kernel's task is cancelled, the panel says so.
        tokens.send_keys(Keys.CONTROL, "a")
        tokens.send_keys("40", Keys.TAB)
        browser.execute_script(
            "document.querySelector('.moa-run').click();"
            "setTimeout(() => document.querySelector('.moa-stop').click(), 700);"
        )
        wait.until(lambda d: "Stopped." in d.execute_script("return document.querySelector('.moa-status').textContent"))
        assert find(By.CSS_SELECTOR, ".moa-run").is_enabled() and not find(By.CSS_SELECTOR, ".moa-stop").is_enabled()
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
    deadline = time.monotonic() + 15
    while _servers_of(os.getpid()) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _servers_of(os.getpid()), "an embedded server outlived the kernel"
