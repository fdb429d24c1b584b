"""The review page in a real headless Chromium: name, clicks, shortcuts, reload, the stored rows.

Needs Debian's ``chromium`` and ``chromium-driver`` (``make test-browser`` installs
them and runs this); skipped, saying so, when they are absent.
"""

import os

import pytest

from helpers import LiveServer, write_review_runs
from metarag.review.app import create_app
from metarag.review.db import ReviewDB
from metarag.review.runs import load_items
from metarag.review.summary import summarize_db

pytestmark = pytest.mark.browser

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
         "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--window-size=1280,1000"]


@pytest.fixture
def browser(tmp_path, monkeypatch):
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not os.access(p, os.X_OK)]
    if missing:
        pytest.skip(f"{' and '.join(missing)} not found: install the Debian packages chromium "
                    "and chromium-driver (`make test-browser` does)")
    from selenium import webdriver

    monkeypatch.setenv("SE_OFFLINE", "true")  # Selenium Manager must never fetch a driver
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in [*FLAGS, f"--user-data-dir={tmp_path / 'profile'}"]:
        options.add_argument(flag)
    service = webdriver.ChromeService(executable_path=CHROMEDRIVER,
                                      log_output=str(tmp_path / "chromedriver.log"))
    driver = webdriver.Chrome(options=options, service=service)
    try:
        yield driver
    finally:
        driver.quit()


def test_judging_in_the_browser(tmp_path, browser):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    run_a, run_b, items = load_items(*write_review_runs(tmp_path / "runs"), "maml", "multitask")
    db = ReviewDB(tmp_path / "review.db")
    comparison = db.add_comparison(run_a.name, run_b.name, items)
    keys = [i.key for i in items]

    def text(element_id):
        return browser.find_element(By.ID, element_id).text

    def showing(key):
        """Wait until the page shows the item ``key``, ready for a verdict."""
        WebDriverWait(browser, 15).until(
            lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-state") == "ready"
            and d.find_element(By.ID, "review").get_attribute("data-key") == key)
        return text("answer-A-text"), text("answer-B-text")

    def press(key):
        ActionChains(browser).send_keys(key).perform()

    with LiveServer(create_app(db, comparison)) as live:
        browser.get(live.url + "/")
        WebDriverWait(browser, 15).until(
            lambda d: d.find_element(By.ID, "name-form").is_displayed())
        browser.find_element(By.ID, "name-input").send_keys("ann")
        browser.find_element(By.ID, "name-submit").click()

        shown = {keys[0]: showing(keys[0])}
        assert text("question") == items[0].question
        assert text("progress") == "0 of 5 judged" and "rater: ann" in text("who")
        assert "Passage on " + items[0].question in text("passages")
        assert "1 or a" in text("judge").replace("\n", " ")  # shortcuts are on the page
        page = browser.page_source
        assert "maml" not in page.replace("maml answers", "")  # blind: no system names
        browser.find_element(By.ID, "choose-A").click()

        shown[keys[1]] = showing(keys[1])
        assert text("progress") == "1 of 5 judged"
        press("2")  # B better

        showing(keys[2])
        comment = browser.find_element(By.ID, "comment")
        comment.send_keys("a typo, then t")  # shortcut letters typed in the comment box ...
        assert showing(keys[2]) and text("progress") == "2 of 5 judged"  # ... judge nothing
        comment.send_keys(Keys.ESCAPE)
        press("t")  # tie, with the comment

        before = showing(keys[3])
        browser.refresh()  # same rater (localStorage), same item, same order
        assert showing(keys[3]) == before
        assert text("progress") == "3 of 5 judged" and "rater: ann" in text("who")
        assert not browser.find_element(By.ID, "name-form").is_displayed()
        press("w")  # both wrong

        showing(keys[4])
        browser.find_element(By.ID, "choose-tie").click()
        WebDriverWait(browser, 15).until(lambda d: d.find_element(By.ID, "done").is_displayed())
        assert text("progress") == "5 of 5 judged"

    def system(item, answer):
        return "a" if answer == item.answer_a else "b"

    rows = [(j.key, j.rater, j.verdict, j.comment) for j in db.judgements(comparison.id)]
    assert rows == [
        (keys[0], "ann", system(items[0], shown[keys[0]][0]), ""),  # clicked A
        (keys[1], "ann", system(items[1], shown[keys[1]][1]), ""),  # pressed 2: B
        (keys[2], "ann", "tie", "a typo, then t"),
        (keys[3], "ann", "both_wrong", ""),
        (keys[4], "ann", "tie", ""),
    ]
    [summary] = summarize_db(ReviewDB(db.path))
    wins_a = [r[2] for r in rows[:2]].count("a")
    assert summary.counts == {"a": wins_a, "b": 2 - wins_a, "tie": 2, "both_wrong": 1}
    assert (summary.judged, summary.items, summary.raters) == (5, 5, ["ann"])
    # win rate over the 4 decisive questions: (wins of A + 2 ties/2)/4
    assert summary.win_rate_a.value == pytest.approx((wins_a + 1) / 4)
    assert summary.both_wrong.value == pytest.approx(1 / 5)
