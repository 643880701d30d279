"""The page of `ckpt serve` in headless Chromium (Debian's chromium + chromium-driver),
driven by selenium. Run by tests/serve.rs:

    python tests/browser/explorer.py URL SCREENSHOT_DIR

Asserts that the tree shows the top-level clusters, the map draws, a click on a cluster
shows its summaries and facets, a summary shows its conversation, the SQL box runs a
query, and, when CKPT_PLANTED holds markup planted in the root's texts, that it stays
text. Saves screenshots in SCREENSHOT_DIR. Exits non-zero with a message on failure.
"""

import os
import shutil
import sys
import tempfile

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

url, shots = sys.argv[1], sys.argv[2]
planted = os.environ.get("CKPT_PLANTED")
os.makedirs(shots, exist_ok=True)

profile = tempfile.mkdtemp(prefix="ckpt-chromium-")
options = webdriver.ChromeOptions()
options.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
for flag in [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    f"--user-data-dir={profile}",
    "--window-size=1400,1000",
]:
    options.add_argument(flag)
options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
service = Service(executable_path=shutil.which("chromedriver") or "/usr/bin/chromedriver")
driver = webdriver.Chrome(service=service, options=options)
wait = WebDriverWait(driver, 30)


def shot(name):
    driver.save_screenshot(os.path.join(shots, f"{name}.png"))


def fail(message):
    shot("failure")
    logs = []
    try:
        logs = driver.get_log("browser")
    except Exception:  # noqa: BLE001 - the logs are a help, not the point
        pass
    sys.exit(f"{message}\nbrowser console: {logs}")


def check_no_planted_markup():
    # Markup from the checkpoint must not have become elements or run.
    if driver.execute_script("return window.__planted === 1"):
        fail("planted onerror handler ran")
    if driver.find_elements(By.CSS_SELECTOR, "main img, #tree img"):
        fail("planted <img> became an element")
    if driver.find_elements(By.CSS_SELECTOR, "main b, #tree b"):
        fail("planted <b> became an element")


try:
    driver.get(url)
    # The tree: the top-level clusters (those without parent) are listed.
    wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "#tree > li[role=treeitem]")))
    top = driver.find_elements(By.CSS_SELECTOR, "#tree > li[role=treeitem]")
    tops = driver.execute_script(
        "return fetch('/api/tree').then(r => r.json()).then(t => t.clusters.filter(c => c.parent_id === null).length)"
    )
    if len(top) != tops:
        fail(f"the tree shows {len(top)} top-level clusters, the root has {tops}")

    # The map: drawn on the canvas (not blank: some pixel differs from the background).
    wait.until(lambda d: d.execute_script("return !!window.ckptMap"))
    coloured = driver.execute_script(
        """
        const c = document.getElementById('map');
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let n = 0;
        for (let i = 0; i < d.length; i += 4) if (d[i] !== 255 || d[i+1] !== 255 || d[i+2] !== 255) n++;
        return n;
        """
    )
    if coloured < 500:
        fail(f"the map looks blank ({coloured} coloured pixels)")
    wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, ".numbers dd")))
    shot("overview")
    if planted:
        text = driver.find_element(By.ID, "tree").text
        if planted not in text:
            fail(f"the planted cluster name is not shown as text in the tree: {text[:500]!r}")
        check_no_planted_markup()

    # A click on a cluster in the tree shows its summaries.
    link = top[0].find_element(By.CSS_SELECTOR, ".node a")
    name = link.text
    link.click()
    wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "#summaries .summary-item")))
    heading = driver.find_element(By.ID, "cluster-name").text
    if heading != name:
        fail(f"clicked {name!r}, the page shows {heading!r}")
    if "#/cluster/" not in driver.current_url:
        fail(f"the URL does not name the cluster: {driver.current_url}")
    items = driver.find_elements(By.CSS_SELECTOR, "#summaries .summary-item")
    wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "#facets table")))
    shot("cluster")
    if planted:
        texts = [i.find_element(By.CSS_SELECTOR, ".summary-text").text for i in items]
        if not any(planted in t for t in texts):
            fail("the planted summary is not shown as text among the cluster's summaries")
        check_no_planted_markup()

    # A summary shows its conversation, with roles.
    items[0].find_element(By.CSS_SELECTOR, "a.chat").click()
    wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "#summary .message")))
    roles = [r.text for r in driver.find_elements(By.CSS_SELECTOR, "#summary .role")]
    if not any(r.startswith("user") for r in roles):
        fail(f"the conversation shows no user message: {roles}")
    shot("conversation")
    if planted:
        check_no_planted_markup()

    # Deep link: reloading the URL shows the same cluster.
    current = driver.current_url
    driver.get("about:blank")
    driver.get(current)
    wait.until(ec.text_to_be_present_in_element((By.ID, "cluster-name"), name[:20]))

    # The map: a click on a point opens its cluster.
    driver.get(url)
    wait.until(lambda d: d.execute_script("return !!window.ckptMap"))
    clicked = driver.execute_script(
        """
        const m = window.ckptMap;
        const p = [...m.points].sort((a, b) => a.count - b.count)[0];
        const [x, y] = m.screen(p);
        const r = m.canvas.getBoundingClientRect();
        const at = {clientX: r.left + x, clientY: r.top + y, bubbles: true};
        m.canvas.dispatchEvent(new MouseEvent('mousemove', at));
        m.canvas.dispatchEvent(new MouseEvent('mousedown', at));
        m.canvas.dispatchEvent(new MouseEvent('mouseup', at));
        return p.id;
        """
    )
    wait.until(lambda d: "#/cluster/" in d.current_url)
    wait.until(ec.presence_of_element_located((By.ID, "cluster-name")))

    # The SQL box runs a query; the URL names it.
    driver.get(url + "#/sql")
    box = wait.until(ec.presence_of_element_located((By.ID, "sql")))
    box.clear()
    box.send_keys("SELECT topic, count(*) AS n FROM summaries GROUP BY topic ORDER BY n DESC, topic")
    driver.find_element(By.ID, "run").click()
    wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "#result table tbody tr")))
    rows = driver.find_elements(By.CSS_SELECTOR, "#result table tbody tr")
    if not rows:
        fail("the SQL box showed no rows")
    if "#/sql?q=" not in driver.current_url:
        fail(f"the URL does not name the query: {driver.current_url}")
    shot("sql")
    # A write is refused, with the server's message.
    box.clear()
    box.send_keys("COPY summaries TO 'x.csv'")
    box.send_keys(Keys.CONTROL, Keys.ENTER)
    wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "#result .error")))
    message = driver.find_element(By.CSS_SELECTOR, "#result .error").text
    if "refused" not in message:
        fail(f"COPY was not refused: {message!r}")
    # Cancel: a slow query stops at the button.
    box.clear()
    box.send_keys("SELECT count(*) FROM generate_series(1, 100000000000) WHERE value % 7 = 3")
    driver.find_element(By.ID, "run").click()
    wait.until(lambda d: d.find_element(By.ID, "cancel").is_enabled())
    driver.find_element(By.ID, "cancel").click()
    wait.until(ec.text_to_be_present_in_element((By.ID, "result"), "Cancelled"))
    if planted:
        driver.get(url + "#/sql?q=" + "SELECT%20name%20FROM%20meta_clusters%20WHERE%20parent_id%20IS%20NULL")
        wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "#result table tbody tr")))
        if planted not in driver.find_element(By.ID, "result").text:
            fail("the planted name is not shown as text in the SQL result")
        check_no_planted_markup()
    # Search in the tree.
    driver.get(url)
    search = wait.until(ec.presence_of_element_located((By.ID, "search")))
    wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "#tree > li[role=treeitem]")))
    search.send_keys(name[:6])
    wait.until(lambda d: all(name[:6].lower() in li.text.lower() for li in d.find_elements(By.CSS_SELECTOR, "#tree > li[role=treeitem]")))
    print("browser test passed")
except SystemExit:
    raise
except Exception as e:  # noqa: BLE001 - any failure is reported with a screenshot
    fail(f"{type(e).__name__}: {e}")
finally:
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)
