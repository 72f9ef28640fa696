"""Drives headless Debian Chromium through ChromeDriver with Selenium, step by step, for
`kubectl approve ui`'s browser tests (e2e/tests/approve_ui.rs).

The scenario is a JSON list of steps on stdin; one JSON value per step is printed as a list on
stdout. A step that fails stops the run: the output then ends with {"error": ..., "step": i,
"page": <the page's source>} and the exit status is 1. An `alert()` the page was made to run
fails the next step (Selenium's default for unexpected prompts).

Environment: CHROMIUM and CHROMEDRIVER (paths), TOLLGATE_BROWSER_WORKDIR (a fresh directory
for the profile and the failure screenshot).
"""

import json
import os
import sys

from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait


def browser():
    work = os.environ["TOLLGATE_BROWSER_WORKDIR"]
    options = webdriver.ChromeOptions()
    options.binary_location = os.environ["CHROMIUM"]
    # No sandbox: the tests run as root. No background networking: this machine has no internet
    # and Chromium's own connections only slow it down.
    for flag in ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--window-size=1280,1100", f"--user-data-dir={work}/profile"]:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(executable_path=os.environ["CHROMEDRIVER"], log_output=f"{work}/chromedriver.log")
    return webdriver.Chrome(service=service, options=options)


def find(driver, step):
    return driver.find_element(By.CSS_SELECTOR, step["css"])


def wait(driver, step):
    """Until an element matches `css` (and its text contains `contains`), or with `gone`, until
    none does."""
    want = step.get("contains")

    def ready(d):
        found = d.find_elements(By.CSS_SELECTOR, step["css"])
        if step.get("gone"):
            return not found or not any(e.is_displayed() for e in found)
        for e in found:
            if want is None or want in e.text:
                return e.text or True
        return False

    try:
        # The page replaces its live parts as the watch reports changes: an element found a moment
        # ago may be gone; look again.
        return WebDriverWait(driver, step.get("timeout", 30), poll_frequency=0.1,
                             ignored_exceptions=(StaleElementReferenceException,)).until(ready)
    except TimeoutException:
        try:
            shown = [e.text for e in driver.find_elements(By.CSS_SELECTOR, step["css"])]
        except StaleElementReferenceException:
            shown = "(changing)"
        raise AssertionError(f"waited {step.get('timeout', 30)} s for {step['css']!r}"
                             + (f" containing {want!r}" if want else "")
                             + (" to go" if step.get("gone") else "") + f"; it shows {shown!r}")


def run(driver, step):
    # A live part replaced between finding an element and using it: do the step again.
    for _ in range(9):
        try:
            return run_once(driver, step)
        except StaleElementReferenceException:
            continue
    return run_once(driver, step)


def run_once(driver, step):
    op = step["op"]
    if op == "open":
        driver.get(step["url"])
        return driver.current_url
    if op == "wait":
        return wait(driver, step)
    if op == "click":
        find(driver, step).click()
        return True
    if op == "type":
        e = find(driver, step)
        e.clear()
        e.send_keys(step["text"])
        return True
    if op == "text":
        return find(driver, step).text
    if op == "texts":
        return [e.text for e in driver.find_elements(By.CSS_SELECTOR, step["css"])]
    if op == "count":
        return len(driver.find_elements(By.CSS_SELECTOR, step["css"]))
    if op == "attr":
        return find(driver, step).get_attribute(step["name"])
    if op == "js":
        return driver.execute_script(step["script"])
    if op == "screenshot":
        driver.save_screenshot(step["path"])
        return step["path"]
    if op == "console":
        return [entry.get("message", "") for entry in driver.get_log("browser")]
    if op == "url":
        return driver.current_url
    if op == "wait_file":
        # Until the test says it has done its part.
        WebDriverWait(driver, step.get("timeout", 60), poll_frequency=0.1).until(lambda _: os.path.exists(step["path"]))
        return True
    if op == "mark":
        # Tells the test the page is up (e.g. before it makes the call the page should show).
        with open(step["path"], "w") as f:
            f.write(driver.current_url)
        return True
    raise ValueError(f"unknown op {op!r}")


def main():
    steps = json.load(sys.stdin)
    out = []
    driver = browser()
    try:
        for i, step in enumerate(steps):
            try:
                out.append(run(driver, step))
            except Exception as e:  # reported as data: the Rust test says what failed
                try:
                    page = driver.page_source
                    driver.save_screenshot(os.path.join(os.environ["TOLLGATE_BROWSER_WORKDIR"], "failure.png"))
                except Exception as inner:
                    page = f"(no page: {inner})"
                out.append({"error": f"{type(e).__name__}: {e}", "step": i, "page": page[:6000]})
                print(json.dumps(out))
                return 1
    finally:
        driver.quit()
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
