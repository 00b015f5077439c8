"""Staff run the exchange in a real browser: headless Chromium from the operating system's
packages (`apt-get install chromium chromium-driver`; .ci/run installs them where missing),
driven by Selenium through Debian's chromedriver. Screenshots land in var/screenshots/ for a
person to look at.

The browser is required, not optional: where it is missing the test fails and says how to
install it, it never skips."""

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from django.contrib.auth.models import User
from selenium import webdriver
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import Select, WebDriverWait

from exchange.ratelimit import reset
from hashx.client import Client, HashxError
from hashx.keys import key_id_of, public_pem, raw_public_bytes
from members.models import Organisation
from signals.actions.merge import do_merge_batch
from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.django_db(transaction=True)

SCREENSHOTS = REPO_ROOT / "var" / "screenshots"
PASSWORD = "a long staff passphrase"
PDQ = [
    "f8f8f0cee0f4a84f06370a22038f63f0b36e2ed596621e1d33e6b39c4e9c9b22",
    "0f8f0cee0f4a84f06370a22038f63f0b36e2ed596621e1d33e6b39c4e9c9b22f",
    "e0f4a84f06370a22038f63f0b36e2ed596621e1d33e6b39c4e9c9b22f8f8f0ce",
]


def _binary(*names: str) -> str:
    for name in names:
        found = shutil.which(name)
        if found:
            return found
    pytest.fail(
        f"no {' or '.join(names)} on PATH: the browser test needs Debian's chromium and "
        "chromium-driver (`apt-get install -y chromium chromium-driver`; .ci/run does it)"
    )


LAUNCHES = 3


def _launch() -> WebDriver:
    options = webdriver.ChromeOptions()
    options.binary_location = _binary("chromium", "chromium-browser")
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                     "--disable-gpu", "--window-size=1400,1800"):  # fmt: skip
        options.add_argument(argument)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    service = Service(_binary("chromedriver"), log_output=str(SCREENSHOTS / "chromedriver.log"))
    return webdriver.Chrome(options=options, service=service)


def _ready(driver: WebDriver) -> bool:
    """Whether a page renders at all: a renderer that dies on the first page (seen once in CI,
    "Unable to receive message from renderer") is the browser's start failing, not the
    exchange."""
    try:
        driver.get("data:text/html,<p id=ready>ready</p>")
        return driver.find_element(By.ID, "ready").text == "ready"
    except WebDriverException:
        return False


@pytest.fixture
def browser() -> Iterator[WebDriver]:
    """A browser whose renderer has shown one page. Launched afresh up to LAUNCHES times when
    the first blank page fails; a failure after that is the test's."""
    for _ in range(LAUNCHES):
        driver = _launch()
        if _ready(driver):
            break
        driver.quit()
    else:
        pytest.fail(f"headless chromium failed to render a blank page in {LAUNCHES} launches; "
                    f"see {SCREENSHOTS / 'chromedriver.log'}")  # fmt: skip
    driver.implicitly_wait(5)
    try:
        yield driver
    finally:
        driver.quit()


def shot(browser: WebDriver, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    browser.save_screenshot(str(path))
    return path


def submit(browser: WebDriver, selector: str = "input[type=submit][name=_save]") -> None:
    browser.find_element(By.CSS_SELECTOR, selector).click()


def pick(browser: WebDriver, field: str, text: str) -> None:
    """Choose ``text`` in the admin's autocomplete (select2) widget of ``field``."""
    browser.find_element(By.CSS_SELECTOR, f"[aria-labelledby$='{field}-container']").click()
    search = browser.find_element(
        By.CSS_SELECTOR, ".select2-container--open input.select2-search__field"
    )
    search.send_keys(text)
    WebDriverWait(browser, 10).until(
        expected_conditions.text_to_be_present_in_element(
            (By.CSS_SELECTOR, ".select2-results__option--highlighted"), text
        )
    )
    search.send_keys(Keys.ENTER)


def run_action(
    browser: WebDriver, changelist: str, row_text: str, action: str, reason: str
) -> None:
    browser.get(changelist)
    row = browser.find_element(By.XPATH, f"//tr[contains(., '{row_text}')]")
    row.find_element(By.CSS_SELECTOR, "input.action-select").click()
    Select(browser.find_element(By.NAME, "action")).select_by_value(action)
    browser.find_element(By.CSS_SELECTOR, "button[name=index]").click()
    browser.find_element(By.NAME, "reason").send_keys(reason)
    browser.find_element(By.CSS_SELECTOR, "input[type=submit][value^='Yes']").click()
    assert "1 changed" in browser.find_element(By.CSS_SELECTOR, "ul.messagelist").text


def test_staff_onboard_a_member_and_watch_it_on_the_dashboard(browser, exchange_url):
    User.objects.create_superuser("staff", password=PASSWORD)
    member_key = Ed25519PrivateKey.generate()
    base = exchange_url

    # Log in.
    browser.get(f"{base}/admin/login/")
    browser.find_element(By.NAME, "username").send_keys("staff")
    browser.find_element(By.NAME, "password").send_keys(PASSWORD + Keys.ENTER)
    assert browser.find_element(By.CSS_SELECTOR, ".ops-dashboard-link a").text
    shot(browser, "01-admin-home")

    # Onboard a member, pasting its public key in the same form, then approve it.
    browser.get(f"{base}/admin/members/organisation/add/")
    browser.find_element(By.NAME, "slug").send_keys("acme-video")
    browser.find_element(By.NAME, "name").send_keys("Acme Video")
    browser.find_element(By.NAME, "signals_per_day").send_keys("1000")
    browser.find_element(By.CSS_SELECTOR, "textarea[name$='public_key_text']").send_keys(
        public_pem(raw_public_bytes(member_key.public_key()))
    )
    submit(browser)
    assert "was added successfully" in browser.find_element(By.CSS_SELECTOR, "ul.messagelist").text
    browser.get(f"{base}/admin/members/signingkey/")
    assert key_id_of(member_key)[:12] in browser.page_source
    run_action(
        browser,
        f"{base}/admin/members/organisation/",
        "acme-video",
        "approve",
        "Signed the charter",
    )
    browser.get(f"{base}/admin/members/organisation/add/")
    browser.find_element(By.NAME, "slug").send_keys("globex-social")
    browser.find_element(By.NAME, "name").send_keys("Globex Social")
    submit(browser)
    shot(browser, "02-members")

    # A set owned by the member, granted to another.
    browser.get(f"{base}/admin/signals/hashset/add/")
    browser.find_element(By.NAME, "slug").send_keys("acme-csam")
    browser.find_element(By.NAME, "name").send_keys("Acme CSAM hashes")
    pick(browser, "owner", "acme-video")
    Select(browser.find_element(By.NAME, "distribution")).select_by_value("granted")
    grant = browser.find_element(By.CSS_SELECTOR, "select[name$='-0-organisation']")
    grant_field = grant.get_attribute("id")
    pick(browser, grant_field, "globex-social")
    browser.find_element(By.CSS_SELECTOR, "input[name$='-0-can_read']").click()
    submit(browser)
    assert "was added successfully" in browser.find_element(By.CSS_SELECTOR, "ul.messagelist").text
    shot(browser, "03-set-with-grant")

    # The member publishes with its key, over HTTP, and a merge runs (as a worker would).
    client = Client(base, member_key)
    # A bucket left in Redis by an earlier run for an organisation of the same id starts afresh.
    reset("signals", Organisation.objects.get(slug="acme-video").pk)
    batch = client.publish("acme-csam", [{"type": "pdq", "value": value} for value in PDQ])
    do_merge_batch(batch["batch"])

    # The dashboard draws it.
    browser.get(f"{base}/admin/ops/")
    charts = browser.find_elements(By.CSS_SELECTOR, "svg.chart")
    assert len(charts) == 6
    columns = browser.find_elements(By.CSS_SELECTOR, "svg.chart rect.bar[data-series='acme-video']")
    assert [column.get_attribute("data-value") for column in columns] == ["3"]
    assert float(columns[0].get_attribute("height") or 0) > 0
    active = browser.find_element(By.CSS_SELECTOR, "svg.chart rect.segment[data-series='active']")
    assert active.get_attribute("data-value") == "3"
    shot(browser, "04-dashboard")
    browser.find_element(By.LINK_TEXT, "acme-video").click()
    shot(browser, "05-member-page")
    quotas = browser.find_element(By.ID, "quotas").text
    assert "signals" in quotas and "997 of 1000 left" in quotas, quotas

    # Revoke the key: the member's next request is refused.
    run_action(
        browser,
        f"{base}/admin/members/signingkey/",
        key_id_of(member_key)[:12],
        "revoke",
        "Key leaked",
    )
    shot(browser, "06-key-revoked")
    with pytest.raises(HashxError) as refused:
        client.whoami()
    assert refused.value.status == 401 and "revoked" in str(refused.value).lower()
