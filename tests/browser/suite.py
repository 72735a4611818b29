#!/usr/bin/python3
"""The panel in a real headless Chromium (Debian's chromium + chromedriver, driven by Debian's
python3-selenium). Run by tests/browser.rs against a real `iysgate demo`; by hand:

    /usr/bin/python3 tests/browser/suite.py --base http://127.0.0.1:8080 \
        --admin NAME:PASSWORD --compliance NAME:PASSWORD --viewer NAME:PASSWORD \
        --locked NAME:PASSWORD [--screenshots DIR]

Each scenario is one function taking the Suite and raising on a failure; add new ones to
SCENARIOS. Exits 0 when every
scenario passed, 1 with the reasons otherwise, 2 when the browser or Selenium is missing:
nothing is ever skipped.
"""

import argparse
import datetime
import os
import tempfile
import sys
import time
import traceback

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


def missing(reason):
    print(f"browser suite cannot run: {reason}", file=sys.stderr)
    print("install with: scripts/test-services.sh (apt: chromium chromium-driver python3-selenium)",
          file=sys.stderr)
    sys.exit(2)


for path in (CHROMIUM, CHROMEDRIVER):
    if not os.access(path, os.X_OK):
        missing(f"{path} is missing")
try:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import Select, WebDriverWait
except ImportError as e:  # pragma: no cover
    missing(f"python3-selenium is missing ({e})")

# Turkey time (UTC+3 all year): the panel's days.
TURKEY = datetime.timezone(datetime.timedelta(hours=3))
YESTERDAY = (datetime.datetime.now(TURKEY).date() - datetime.timedelta(days=1)).isoformat()

# Brand-scoped pages and data endpoints a compliance user granted only 600001 must be refused
# for 600002 (403).
FOREIGN_BRAND = 600002
BRAND_ENDPOINTS = [
    f"/brands/{FOREIGN_BRAND}",
    f"/reports/{FOREIGN_BRAND}",
    f"/reports/{FOREIGN_BRAND}/{YESTERDAY}",
    f"/reports/{FOREIGN_BRAND}/{YESTERDAY}.csv",
    f"/reports/{FOREIGN_BRAND}/{YESTERDAY}.json",
    f"/uploads?brand={FOREIGN_BRAND}",
    f"/lookup?brand={FOREIGN_BRAND}&recipient=%2B905321234567",
]

# The main pages, screenshot when they answer 200 (login and the refusal page too).
MAIN_PAGES = ["/", "/brands", "/clients", "/lookup", "/record", "/uploads", "/import",
              "/reports", "/users", "/audit"]

LABEL_CHECK = """
const bad = [];
for (const el of document.querySelectorAll('input, select, textarea')) {
  if (el.type === 'hidden') continue;
  const labelled = (el.labels && el.labels.length > 0) || el.getAttribute('aria-label')
    || el.getAttribute('aria-labelledby');
  if (!labelled) bad.push(el.outerHTML.slice(0, 120));
}
for (const b of document.querySelectorAll('button')) {
  if (!(b.textContent.trim() || b.getAttribute('aria-label'))) bad.push(b.outerHTML.slice(0, 120));
}
return bad;
"""

FETCH_STATUS = """
const done = arguments[arguments.length - 1];
const [path, method, body] = [arguments[0], arguments[1], arguments[2]];
const init = {method: method, redirect: 'manual', credentials: 'same-origin'};
if (body !== null) {
  init.body = body;
  init.headers = {'Content-Type': 'application/x-www-form-urlencoded'};
}
fetch(path, init).then(r => done(r.status), e => done('error ' + e));
"""


class Failed(Exception):
    pass


def check(cond, why):
    if not cond:
        raise Failed(why)


class Suite:
    def __init__(self, args):
        self.base = args.base.rstrip("/")
        self.accounts = {
            role: tuple(getattr(args, role).split(":", 1))
            for role in ("admin", "compliance", "viewer", "locked")
        }
        self.shots = args.screenshots
        self.samples = args.sample
        opts = webdriver.ChromeOptions()
        opts.binary_location = CHROMIUM
        for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                     "--disable-gpu", "--window-size=1280,800", "--lang=tr-TR",
                     "--hide-scrollbars"):
            opts.add_argument(flag)
        self.driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
        self.driver.set_page_load_timeout(30)
        self.driver.set_script_timeout(30)
        self.desktop()

    def desktop(self):
        """A 1280x800 viewport (the window is made larger by whatever the browser keeps)."""
        self.driver.set_window_size(1280, 800)
        iw, ih = self.driver.execute_script("return [window.innerWidth, window.innerHeight]")
        if (iw, ih) != (1280, 800):
            self.driver.set_window_size(2560 - iw, 1600 - ih)

    def close(self):
        self.driver.quit()

    # -- helpers ----------------------------------------------------------------------------
    def go(self, path):
        self.driver.get(self.base + path)

    def text(self):
        return self.driver.find_element(By.TAG_NAME, "body").text

    def path(self):
        url = self.driver.current_url
        return url[len(self.base):] if url.startswith(self.base) else url

    def fresh(self):
        """A browser without a session (the cookies dropped)."""
        self.go("/login")
        self.driver.delete_all_cookies()

    def login(self, role, password=None):
        name, pw = self.accounts[role]
        self.fresh()
        self.go("/login")
        self.driver.find_element(By.NAME, "name").send_keys(name)
        self.driver.find_element(By.NAME, "password").send_keys(password or pw)
        self.click(self.driver.find_element(By.CSS_SELECTOR, "form button[type=submit]"))
        return name

    def click(self, element):
        """Clicks a submit button or link and waits until a new page has fully loaded (a
        marker set on the old page's window is gone and the new document is complete)."""
        self.driver.execute_script("window.__iysgateOld = true")
        element.click()

        def loaded(driver):
            try:
                return driver.execute_script(
                    "return window.__iysgateOld === undefined && document.readyState === 'complete'")
            except WebDriverException:
                return False  # between documents

        WebDriverWait(self.driver, 30).until(loaded)

    def status(self, path, method="GET", body=None):
        return self.driver.execute_async_script(FETCH_STATUS, path, method, body)

    def shot(self, name):
        if self.shots:
            os.makedirs(self.shots, exist_ok=True)
            self.driver.save_screenshot(os.path.join(self.shots, f"{name}.png"))

    def labels_ok(self, where):
        bad = self.driver.execute_script(LABEL_CHECK)
        check(not bad, f"{where}: controls without a label: {bad}")


# -- scenarios ------------------------------------------------------------------------------
def login_and_logout(s):
    s.fresh()
    s.go("/users")
    check(s.path().startswith("/login"), f"no session: to the login, not {s.path()}")
    s.shot("login")
    name = s.login("admin")
    # The login goes back to the page asked for... here the form's own next (/).
    check("Çıkış" in s.text(), f"logged in: the page has a logout button: {s.text()[:300]}")
    check(f"{name} (admin)" in s.text(), "the header names the account")
    s.click(s.driver.find_element(By.XPATH, "//form[@action='/logout']//button"))
    check(s.path().startswith("/login"), f"after logout, the login page: {s.path()}")
    s.go("/")
    check(s.path().startswith("/login"), "the session is over after logout")


def wrong_password_then_rate_limit(s):
    s.login("viewer", password="certainly-not-it")
    check("Kullanıcı adı ya da parola yanlış." in s.text(), f"wrong password message: {s.text()}")
    check(s.path().startswith("/login"), "still on the login page")
    # The locked account: 5 failures, then even its right password waits (429).
    for _ in range(5):
        s.login("locked", password="wrong-wrong-wrong")
        check("Kullanıcı adı ya da parola yanlış." in s.text(), "each failure says so")
    s.login("locked")
    check("Çok fazla hatalı deneme" in s.text(), f"the rate limit's message: {s.text()}")
    s.shot("login-rate-limited")
    s.go("/")
    check(s.path().startswith("/login"), "no session was opened while limited")


def compliance_cannot_see_another_brand(s):
    name = s.login("compliance")
    check(f"{name} (compliance)" in s.text(), f"logged in as compliance: {s.text()[:300]}")
    s.go("/")
    body = s.text()
    check("600001" in body, f"the granted brand is on the home page: {body[:500]}")
    check(str(FOREIGN_BRAND) not in body, "the other brand is not on the home page")
    nav = s.driver.find_element(By.CSS_SELECTOR, "nav").text
    check("Kullanıcılar" not in nav and "Denetim" not in nav, f"no admin menu entries: {nav}")
    for path in ("/users", "/audit"):
        check(s.status(path) == 403, f"{path} refused for compliance")
    s.go("/users")
    check("erişim yetkiniz yok" in s.text(), f"the refusal page explains: {s.text()}")
    s.shot("forbidden")
    for path in BRAND_ENDPOINTS:
        got = s.status(path)
        check(got == 403, f"{path} for a brand not granted: {got}, not 403")
    # With this session's own form token, so the refusal is the brand's, not the token's.
    s.go("/")
    token = s.driver.execute_script("return document.querySelector('input[name=_csrf]').value")
    got = s.status(f"/reports/{FOREIGN_BRAND}/{YESTERDAY}/reconcile", "POST", f"_csrf={token}")
    check(got == 403, f"a reconciliation of a brand not granted: {got}, not 403")


def admin_adds_a_user_who_logs_in(s):
    s.login("admin")
    s.go("/users")
    s.labels_ok("/users")
    stamp = str(int(time.time()))[-6:]
    new = f"tarayici{stamp}"
    s.driver.find_element(By.CSS_SELECTOR, "form[action='/users/add'] input[name=name]").send_keys(new)
    Select(s.driver.find_element(By.CSS_SELECTOR, "form[action='/users/add'] select[name=role]")
           ).select_by_value("viewer")
    s.driver.find_element(By.CSS_SELECTOR,
                          "form[action='/users/add'] input[name=brand][value='600001']").click()
    s.click(s.driver.find_element(By.CSS_SELECTOR, "form[action='/users/add'] button[type=submit]"))
    check(f"Hesap eklendi: {new}" in s.text(), f"the account was added: {s.text()[:500]}")
    password = s.driver.find_element(By.CSS_SELECTOR, "code.secret").text
    check(len(password) == 16, f"a generated password shown once: {password!r}")
    row = s.driver.find_element(By.XPATH, f"//tr[th[normalize-space()='{new}']]").text
    check("izleyici" in row and "600001" in row, f"the new row: {row}")
    s.go("/users")
    check(password not in s.driver.page_source, "the password is not shown again")
    s.shot("users")
    s.go("/audit")
    check("user.add" in s.text() and f"account {new} role viewer" in s.text(), "audited")
    check(password not in s.driver.page_source, "no password in the audit log")
    s.shot("audit")
    s.accounts["new"] = (new, password)
    s.login("new")
    check(f"{new} (viewer)" in s.text(), f"the new account logs in: {s.text()[:300]}")


def csrf_less_post_refused(s):
    name = s.login("admin")
    s.go("/")
    check(s.status("/logout", "POST", None) == 403, "a POST without the form token: 403")
    check(s.status("/logout", "POST", "_csrf=0000") == 403, "a wrong form token: 403")
    check(s.status("/users/reset", "POST", f"name={name}") == 403, "no token, no reset")
    s.go("/")
    check(f"{name} (admin)" in s.text(), "still logged in: nothing was done")


def keyboard_and_labels(s):
    s.fresh()
    s.go("/login")
    s.labels_ok("/login")
    active = lambda: s.driver.execute_script(
        "const a = document.activeElement; return [a.tagName, a.name || '', a.type || '']")
    check(active()[1] == "name", f"the login starts on the user name: {active()}")
    name, pw = s.accounts["admin"]
    s.driver.switch_to.active_element.send_keys(name)
    s.driver.switch_to.active_element.send_keys(Keys.TAB)
    check(active()[1] == "password", f"Tab reaches the password: {active()}")
    s.driver.switch_to.active_element.send_keys(pw)
    s.driver.switch_to.active_element.send_keys(Keys.TAB)
    check(active()[0] == "BUTTON" and active()[2] == "submit", f"Tab reaches the button: {active()}")
    button = s.driver.switch_to.active_element
    button.send_keys(Keys.ENTER)
    WebDriverWait(s.driver, 30).until(EC.staleness_of(button))
    check(f"{name} (admin)" in s.text(), "logged in with the keyboard alone")
    # The skip link is the first stop on every page.
    s.go("/")
    s.driver.find_element(By.TAG_NAME, "body").send_keys(Keys.TAB)
    check("skip" in (s.driver.switch_to.active_element.get_attribute("class") or ""),
          "the first Tab reaches 'skip to content'")
    for path in MAIN_PAGES:
        if s.status(path) == 200:
            s.go(path)
            s.labels_ok(path)
            check(s.driver.find_elements(By.TAG_NAME, "h1"), f"{path} has a heading")
            s.shot("home" if path == "/" else path.strip("/"))


def readable_on_a_phone(s):
    s.login("admin")
    try:
        s.driver.set_window_size(390, 844)
        for path in ("/", "/users", "/audit", "/import", "/reports/600001", f"/reports/600001/{YESTERDAY}"):
            s.go(path)
            wide = s.driver.execute_script(
                "return [document.documentElement.scrollWidth, window.innerWidth]")
            check(wide[0] <= wide[1] + 1, f"{path} fits a phone's width: {wide}")
        s.go("/users")
        s.shot("phone-users")
    finally:
        s.desktop()


def lookup_gives_checks_reason(s):
    """Each demo sample looked up in the panel shows the reason gRPC Check gave for it."""
    s.login("compliance")
    for sample in s.samples:
        channel, recipient, reason = sample.split("|")
        s.go("/lookup")
        Select(s.driver.find_element(By.NAME, "brand")).select_by_value("600001")
        box = s.driver.find_element(By.NAME, "recipient")
        box.clear()
        box.send_keys(recipient)
        s.click(s.driver.find_element(By.CSS_SELECTOR, "form[action='/lookup'] button[type=submit]"))
        rows = s.driver.find_elements(By.CSS_SELECTOR, "main table tbody tr")
        row = [r for r in rows if r.text.startswith(f"{channel} BIREYSEL")]
        check(row, f"{recipient}: a {channel} BIREYSEL row: {[r.text for r in rows]}")
        check(reason in row[0].text, f"{recipient}: Check said {reason}, the panel: {row[0].text}")
        check(recipient not in s.text(), f"{recipient} is masked on the page")
    s.shot("lookup-result")


def record_bad_then_good(s):
    """A hand-recorded consent: a bad field is named next to it, then a good one is stored."""
    s.login("compliance")
    s.go("/record")
    s.labels_ok("/record")
    s.driver.find_element(By.NAME, "recipient").send_keys("0532 999 77 11")
    Select(s.driver.find_element(By.NAME, "status")).select_by_value("RET")
    for name, value in (("method", "imzalı kağıt form"), ("location", "Kadıköy mağazası")):
        s.driver.find_element(By.NAME, name).send_keys(value)
    date = s.driver.find_element(By.NAME, "consent_date")
    s.driver.execute_script("arguments[0].value = '2099-01-01T10:00'", date)  # in the future
    s.click(s.driver.find_element(By.CSS_SELECTOR, "form[action='/record'] button[type=submit]"))
    err = s.driver.find_elements(By.ID, "consent_date-error")
    check(err and err[0].text.strip(), f"the consent date's error sits next to it: {s.text()[:600]}")
    check("hiçbir şey kaydedilmedi" in s.text(), "nothing was stored")
    s.shot("record-refused")
    date = s.driver.find_element(By.NAME, "consent_date")
    s.driver.execute_script("arguments[0].value = '2026-12-01T10:00'", date)
    s.click(s.driver.find_element(By.CSS_SELECTOR, "form[action='/record'] button[type=submit]"))
    check("Kaydedildi" in s.text(), f"recorded: {s.text()[:600]}")
    check("LOCAL_RET" in s.text(), f"a RET is DENY at once: {s.text()[:600]}")
    s.shot("record")
    s.go("/lookup?brand=600001&recipient=%2B905329997711")
    check("LOCAL_RET" in s.text(), "the lookup shows it")


IMPORT_HEADER = ("recipient,recipient_type,channel,status,source,consent_date,retailer_access,"
                 "method,location,document_ref,capturing_system")


def import_file(rows):
    """A CSV of `rows` good consents (every tenth a RET) with two bad rows: line 3 has an
    unknown channel, the last line a consent date in the future."""
    past = (datetime.datetime.now(TURKEY) - datetime.timedelta(hours=3)).strftime("%Y-%m-%d %H:%M:%S")
    lines = [IMPORT_HEADER]
    for i in range(rows):
        status = "RET" if i % 10 == 0 else "ONAY"
        channel = "FAKS" if i == 1 else "MESAJ"
        lines.append(f"+90554{i:07d},BIREYSEL,{channel},{status},HS_FIZIKSEL_ORTAM,{past},,"
                     f"imzalı form,\"Moda, Kadıköy\",F-{i},kasa-3")
    lines.append(f"+905549999999,BIREYSEL,MESAJ,ONAY,HS_FIZIKSEL_ORTAM,2099-01-01 10:00:00,,"
                 f"imzalı form,Kadıköy,F-x,kasa-3")
    f = tempfile.NamedTemporaryFile("w", suffix=".csv", prefix="izinler-", delete=False)
    f.write("\n".join(lines) + "\n")
    f.close()
    return f.name


def import_with_bad_rows_and_its_progress(s):
    """A file with bad rows: its progress while it runs, then the summary with the refused
    rows by line and field, downloadable; the imported RETs are in force at once."""
    rows = 150000
    path = import_file(rows)
    try:
        s.login("compliance")
        s.go("/import")
        s.labels_ok("/import")
        Select(s.driver.find_element(By.NAME, "brand")).select_by_value("600001")
        s.driver.find_element(By.NAME, "file").send_keys(path)
        s.click(s.driver.find_element(By.CSS_SELECTOR, "form[action='/import'] button[type=submit]"))
        check(s.path().startswith("/import/"), f"to the import's page: {s.path()}")
        job = s.path()
        bars = s.driver.find_elements(By.CSS_SELECTOR, "[data-poll] progress")
        check(bars, f"the import is still running when its page opens: {s.text()[:400]}")
        s.shot("import-progress")
        # panel.js polls the status and reloads the page when it is done.
        WebDriverWait(s.driver, 180).until(
            lambda d: "Bitti" in d.find_element(By.TAG_NAME, "body").text)
    finally:
        os.unlink(path)
    body = s.text()
    total = rows + 1
    check(f"{total:,}".replace(",", "\u202f") + " satır" in body, f"{total} rows: {body[:600]}")
    check("2 reddedildi" in body, f"two refused: {body[:600]}")
    cells = [r.text for r in s.driver.find_elements(By.CSS_SELECTOR, "main table tbody tr")]
    check(any(c.startswith("3 channel") for c in cells), f"line 3's channel: {cells}")
    check(any(c.startswith(f"{rows + 2} consent_date") for c in cells),
          f"line {rows + 2}'s consent date: {cells}")
    check(s.status(f"{job}/refused.csv") == 200, "the refused rows download")
    s.shot("import-summary")
    s.go("/lookup?brand=600001&recipient=%2B905540000000")
    check("LOCAL_RET" in s.text(), f"an imported RET is DENY at once: {s.text()[:600]}")


def daily_report_with_chart(s):
    """Yesterday's reconciliation against the demo's mock İYS: the changes the index lacked
    found and repaired (agreement withheld), run again and confirmed; the month's charts draw
    the day."""
    s.login("compliance")
    s.go("/reports")
    check(s.path() == "/reports/600001", f"one brand granted: straight to it: {s.path()}")
    check(s.driver.find_elements(By.CSS_SELECTOR, "table.calendar"), "a calendar of days")
    s.click(s.driver.find_element(By.CSS_SELECTOR, f"a[href='/reports/600001/{YESTERDAY}']"))
    check("Bu gün için mutabakat yapılmadı" in s.text(), f"not reconciled yet: {s.text()[:600]}")
    s.labels_ok("/reports day")
    s.click(s.driver.find_element(By.CSS_SELECTOR, "form[action$='/reconcile'] button[type=submit]"))
    body = s.text()
    check("SHA-384 doğrulandı" in body, f"İYS's file verified: {body[:900]}")
    check("Uyuşmazlık: 6, giderilen: 6" in body, f"six missed changes repaired: {body[:1500]}")
    check("onaylanmadı" in body, "agreement withheld while mismatches are found")
    s.shot("report-day-repaired")
    s.driver.find_element(By.NAME, "confirm").click()
    s.click(s.driver.find_element(By.CSS_SELECTOR, "form[action$='/reconcile'] button[type=submit]"))
    check("mutabakat onaylandı" in s.text(), f"confirmed on the second run: {s.text()[:1500]}")
    s.shot("report-day")
    check(s.status(f"/reports/600001/{YESTERDAY}.csv") == 200, "the day as CSV")
    check(s.status(f"/reports/600001/{YESTERDAY}.json") == 200, "the day as JSON")
    s.go("/reports/600001")
    day = YESTERDAY[8:10] + "." + YESTERDAY[5:7]
    titles = [t.get_attribute("textContent") for t in
              s.driver.find_elements(By.CSS_SELECTOR, "#chart-rets svg rect title")]
    check(f"{day} İYS'den gelen yeni RET: 4" in titles, f"the RETs chart draws the day: {titles}")
    svg = s.driver.find_element(By.CSS_SELECTOR, "#chart-approvals svg")
    check(svg.size["width"] > 300 and svg.size["height"] > 100, f"the chart is drawn: {svg.size}")
    s.driver.execute_script("document.getElementById('chart-approvals').scrollIntoView()")
    s.shot("report-month")


SCENARIOS = [
    lookup_gives_checks_reason,
    record_bad_then_good,
    import_with_bad_rows_and_its_progress,
    daily_report_with_chart,
    login_and_logout,
    wrong_password_then_rate_limit,
    compliance_cannot_see_another_brand,
    admin_adds_a_user_who_logs_in,
    csrf_less_post_refused,
    keyboard_and_labels,
    readable_on_a_phone,
]


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--base", required=True)
    for role in ("admin", "compliance", "viewer", "locked"):
        ap.add_argument(f"--{role}", required=True, metavar="NAME:PASSWORD")
    ap.add_argument("--sample", action="append", default=[],
                    help="CHANNEL|RECIPIENT|REASON: what gRPC Check answered for a demo recipient")
    ap.add_argument("--screenshots", help="directory for <page>.png")
    ap.add_argument("--only", help="run only the scenarios whose names contain this")
    args = ap.parse_args()
    try:
        suite = Suite(args)
    except Exception as e:  # noqa: BLE001 - any start failure is fatal and explained
        missing(f"chromium did not start: {e}")
    failures = []
    try:
        for scenario in SCENARIOS:
            if args.only and args.only not in scenario.__name__:
                continue
            started = time.time()
            try:
                scenario(suite)
                print(f"ok    {scenario.__name__} ({time.time() - started:.1f} s)")
            except Exception as e:  # noqa: BLE001
                failures.append(scenario.__name__)
                print(f"FAIL  {scenario.__name__}: {e}")
                traceback.print_exc()
                suite.shot(f"failed-{scenario.__name__}")
    finally:
        suite.close()
    if failures:
        print(f"{len(failures)} scenario(s) failed: {', '.join(failures)}")
        sys.exit(1)
    print(f"all {len(SCENARIOS)} browser scenarios passed")


if __name__ == "__main__":
    main()
