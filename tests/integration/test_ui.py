"""The try-it page at GET /: its headers (a strict Content-Security-Policy
and friends) and routes, the ui setting (ui = false: 404), the admin
listener (never), and the page itself in a real headless browser (Debian's
chromium and chromedriver through python3-selenium): a photo picked
through the file input, its top-1 label checked against the API's, the
notice on seeded weights (and none on others), the note on class-index
labels, no CSP violation in the
console, keyboard reach of the input, a phone-sized viewport, and a
screenshot in meson-logs.

Usage: test_ui.py EFFNETD EFFNET LOGDIR"""

import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import daemon as dm  # noqa: E402
from daemon import check, finish  # noqa: E402

EFFNETD, EFFNET, LOGDIR = sys.argv[1], sys.argv[2], sys.argv[3]
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
       "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'")
ASSETS = {"/": "text/html", "/ui/app.js": "text/javascript", "/ui/app.css": "text/css"}


def strip_metadata(src, dst):
    """The same tensors without the safetensors "__metadata__" that marks
    seeded weights: to the server, a file of unknown origin."""
    with open(src, "rb") as f:
        data = f.read()
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + n])
    header.pop("__metadata__", None)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(dst, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + data[8 + n:])


def http_checks(d):
    for path, ctype in ASSETS.items():
        s, h, b = d.request("GET", path)
        check(s == 200 and h.get("content-type", "").startswith(ctype) and b,
              f"GET {path}: 200 {ctype} ({s}, {h.get('content-type')})")
        check(h.get("content-security-policy") == CSP, f"GET {path}: the strict CSP ({h.get('content-security-policy')})")
        check(h.get("x-content-type-options") == "nosniff" and h.get("referrer-policy") == "no-referrer"
              and h.get("x-frame-options") == "DENY" and h.get("cache-control") == "no-cache",
              f"GET {path}: nosniff, no-referrer, DENY, Cache-Control ({h})")
        s, h, b = d.request("HEAD", path)
        check(s == 200 and b == b"", f"HEAD {path}: 200 without a body")
    s, _, page = d.request("GET", "/")
    html = page.decode()
    check("<script src=\"/ui/app.js\"" in html and "<link rel=\"stylesheet\" href=\"/ui/app.css\">" in html
          and "<script>" not in html and "style=" not in html and "http://" not in html and "https://" not in html,
          "the page loads its own script and style only, nothing inline, nothing from elsewhere")
    check('name="viewport"' in html and '<label for="files">' in html and 'type="file"' in html
          and "multiple" in html and 'aria-live="polite"' in html and '<html lang="en">' in html,
          "viewport, a labelled multiple file input, aria-live results, a language")
    s, h, b = d.request("POST", "/", b"x", {"Content-Type": "text/plain"})
    check(s == 405 and h.get("allow") == "GET, HEAD", f"POST / is 405 with Allow: GET, HEAD ({s}, {h.get('allow')})")
    s, _, _ = d.request("GET", "/ui/nope.js")
    check(s == 404, f"an unknown /ui/ file is 404 ({s})")
    port = dm.admin_port(d)
    check(port and dm.get_status(port, "/") == 404 and dm.get_status(port, "/ui/app.js") == 404
          and dm.get_status(port, "/healthz") == 200, "not served on the admin listener")


def new_driver(width, height):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = shutil.which("chromium")
    # As root there is no user namespace sandbox for chromium; /dev/shm is
    # small in containers.
    for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
              f"--window-size={width},{height}", "--no-first-run", "--disable-extensions"):
        opts.add_argument(a)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=opts)


def save_page(driver, path):
    """A screenshot of the whole page, not only the window."""
    import base64

    size = driver.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
    shot = driver.execute_cdp_cmd("Page.captureScreenshot", {
        "format": "png", "captureBeyondViewport": True,
        "clip": {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1}})
    with open(path, "wb") as f:
        f.write(base64.b64decode(shot["data"]))


def wait(driver, what, cond, timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            v = cond(driver)
            if v:
                return v
        except Exception:   # the element may not be there yet
            pass
        time.sleep(0.1)
    check(False, f"waited {timeout} s for {what}")
    return None


def browser_checks(d, photo, api_top1, seeded, shot):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    driver = new_driver(1200, 1000)
    try:
        url = f"http://127.0.0.1:{d.port}/"
        driver.get(url)
        name = wait(driver, "the model's name", lambda dr: (t := dr.find_element(By.ID, "model-name").text)
                    and "loading" not in t and t)
        check(name and "efficientnetv2-b0" in name, f"the page names the model from /v1/models ({name!r})")
        prec = driver.find_element(By.ID, "model-precision").text
        check(prec.startswith("fp32"), f"the page shows the precision ({prec!r})")
        weights = driver.find_element(By.ID, "model-weights").text
        notice = driver.find_element(By.ID, "untrained")
        if seeded:
            check(notice.is_displayed() and "untrained" in notice.text and "seeded" in weights
                  and ".safetensors" in weights and "undefined" not in weights,
                  f"the untrained notice shows for seeded weights ({weights!r})")
            check(not driver.find_element(By.ID, "indices").is_displayed(),
                  "no class-index note with the built-in ImageNet names")
        else:
            check(not notice.is_displayed() and weights.startswith("file ") and ".safetensors" in weights
                  and "undefined" not in weights,
                  f"no untrained notice for other weights ({weights!r})")
            note = driver.find_element(By.ID, "indices")
            labels = driver.find_element(By.ID, "model-labels").text
            check(note.is_displayed() and "class index" in note.text and "12 classes" in labels,
                  f"the page says the labels are class indices ({labels!r})")
            return
        # Keyboard: Tab from the start of the page reaches the file input.
        body = driver.find_element(By.TAG_NAME, "body")
        reached = False
        for _ in range(12):
            body.send_keys(Keys.TAB) if not reached else None
            if driver.execute_script("return document.activeElement && document.activeElement.id") == "files":
                reached = True
                break
            driver.switch_to.active_element.send_keys(Keys.TAB)
        check(reached, "Tab reaches the file input")
        # Pick the photo through the real file input.
        driver.find_element(By.ID, "files").send_keys(photo)
        card = wait(driver, "the result", lambda dr: dr.find_element(By.CSS_SELECTOR, "#results li.result[data-state]")
                    if dr.find_element(By.CSS_SELECTOR, "#results li.result").get_attribute("data-state")
                    in ("done", "error") else None)
        state = card.get_attribute("data-state") if card else None
        check(state == "done", f"the photo is classified ({state}: {card.text if card else ''!r})")
        if state == "done":
            labels = [e.text for e in card.find_elements(By.CSS_SELECTOR, ".pred .label")]
            scores = [e.text for e in card.find_elements(By.CSS_SELECTOR, ".pred .score")]
            bars = card.find_elements(By.CSS_SELECTOR, ".pred .bar span")
            check(labels and labels[0] == api_top1, f"the page's top-1 is the API's ({labels[:1]} vs {api_top1!r})")
            check(len(labels) == 5 and all(s.endswith("%") for s in scores) and len(bars) == 5
                  and bars[0].size["width"] >= bars[-1].size["width"],
                  f"five labelled score bars, the first the widest ({scores})")
            timing = card.find_element(By.CSS_SELECTOR, ".timing").text
            check("ms on the server" in timing and "round trip" in timing and "efficientnetv2-b0" in timing,
                  f"the server's latency and the model are shown ({timing!r})")
            img = card.find_element(By.TAG_NAME, "img")
            check(img.get_attribute("alt") == os.path.basename(photo) and
                  driver.execute_script("return arguments[0].naturalWidth", img) > 0,
                  "the photo is shown, with its name as alt text")
        status = driver.find_element(By.ID, "status").text
        check("classified" in status, f"the status line says so ({status!r})")
        # Two files at once.
        driver.find_element(By.ID, "files").send_keys(photo + "\n" + photo)
        wait(driver, "three results", lambda dr: len(dr.find_elements(By.CSS_SELECTOR, "#results li[data-state=done]"))
             == 3)
        check(len(driver.find_elements(By.CSS_SELECTOR, "#results li[data-state=done]")) == 3,
              "several files picked at once are each classified")
        save_page(driver, shot)
        check(os.path.getsize(shot) > 10000, f"screenshot saved: {shot}")
        logs = driver.get_log("browser")
        bad = [e["message"] for e in logs if e.get("level") == "SEVERE" or "Content Security Policy" in e["message"]]
        check(not bad, f"no console errors, no CSP violation ({bad[:3]})")
    finally:
        driver.quit()

    # A phone: no sideways scrolling. Headless windows are at least 500 px
    # wide, so the phone's screen is emulated.
    driver = new_driver(800, 900)
    try:
        driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                               {"width": 375, "height": 740, "deviceScaleFactor": 2, "mobile": True})
        driver.get(f"http://127.0.0.1:{d.port}/")
        wait(driver, "the page", lambda dr: "loading" not in dr.find_element(By.ID, "model-name").text)
        driver.find_element(By.ID, "files").send_keys(photo)
        wait(driver, "the result", lambda dr: dr.find_elements(By.CSS_SELECTOR, "#results li[data-state=done]"))
        sw, iw = driver.execute_script("return [document.documentElement.scrollWidth, window.innerWidth]")
        check(iw == 375 and sw <= iw, f"on a 375 px wide screen nothing scrolls sideways ({sw} <= {iw})")
        save_page(driver, shot.replace(".png", "-phone.png"))
    finally:
        driver.quit()


def main():
    photos = dm.sample_photos()
    if "grace_hopper.jpg" not in photos:
        print("SKIP: no sample photo (python3-matplotlib)")
        sys.exit(dm.SKIP)
    photo = photos["grace_hopper.jpg"]
    try:
        import selenium  # noqa: F401
        browser = shutil.which("chromium") and shutil.which("chromedriver")
    except ImportError:
        browser = None
    if not browser:
        print("SKIP: no chromium, chromium-driver or python3-selenium (scripts/install-deps.sh installs them)")
        sys.exit(dm.SKIP)
    os.makedirs(LOGDIR, exist_ok=True)
    work = tempfile.mkdtemp(prefix="effnetd-ui-")
    seeded = os.path.join(work, "b0.safetensors")
    subprocess.run([EFFNET, "init-weights", "--variant", "b0", "--seed", "1", "-o", seeded], check=True, timeout=600)
    # Weights of unknown origin (no seed mark) with 12 unnamed classes.
    few = os.path.join(work, "b0-12.safetensors")
    subprocess.run([EFFNET, "init-weights", "--variant", "b0", "--classes", "12", "--seed", "1", "-o", few], check=True,
                   timeout=600)
    plain = os.path.join(work, "b0-plain.safetensors")
    strip_metadata(few, plain)

    d = dm.Daemon(EFFNETD, seeded, work, "--admin-listen", "127.0.0.1:0", "--max-batch", "2", name="effnetd-ui")
    try:
        http_checks(d)
        s, _, answer = d.classify(dm.read(photo))
        preds = answer.get("predictions") or [{}]
        check(s == 200 and preds[0].get("label"), f"the API classifies the photo ({s})")
        browser_checks(d, photo, preds[0].get("label"), True, os.path.join(LOGDIR, "ui-browser.png"))
    finally:
        check(d.stop() == 0, "effnetd stops cleanly")

    d = dm.Daemon(EFFNETD, plain, work, "--max-batch", "2", name="effnetd-ui-plain")
    try:
        s, _, b = d.request("GET", "/v1/models")
        w = json.loads(b)["models"][0]["weights"] if s == 200 else {}
        check(w.get("source") == "file" and "trained" not in w, f"weights without the seed mark: source file ({w})")
        browser_checks(d, photo, None, False, os.path.join(LOGDIR, "ui-browser-plain.png"))
    finally:
        check(d.stop() == 0, "effnetd stops cleanly")

    for args, env, what in ((["--no-ui"], None, "--no-ui"), ([], {"EFFNETD_UI": "false"}, "EFFNETD_UI=false")):
        d = dm.Daemon(EFFNETD, seeded, work, "--max-batch", "1", *args, name="effnetd-noui", env=env)
        try:
            codes = [d.request("GET", p)[0] for p in ASSETS]
            check(codes == [404, 404, 404], f"{what}: GET /, /ui/app.js, /ui/app.css are 404 ({codes})")
            check(d.request("GET", "/v1/models")[0] == 200, f"{what}: the API still answers")
        finally:
            d.stop()

    if not dm.failures:
        shutil.rmtree(work, ignore_errors=True)
    finish()


if __name__ == "__main__":
    main()
