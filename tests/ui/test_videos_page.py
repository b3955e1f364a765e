"""The "Runway videos" page and the task instance's "Runway video" view, in a real browser on a real stack.

Each test saves screenshots under tests/ui/screenshots/ (see conftest.py).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import pytest
import requests

from tests.fixtures import s3
from tests.fixtures.stack import AirflowStack
from tests.ui.conftest import OTHER_DAG, STORED_DAG, USERS, screenshot, trigger, wait_run, xcom

pytestmark = [pytest.mark.ui, pytest.mark.e2e]

PLAY_TIMEOUT = 20.0


@pytest.fixture(scope="module")
def runs(ui_stack: AirflowStack, emulator_server: Any, emulator_config: Any) -> dict[str, str]:
    """One finished run of each test DAG (generate -> store in S3; generate only)."""
    emulator_server.reset()  # an earlier module's settings (a slow render, faults) must not leak in
    # A 5 s render, as in tests/e2e/test_real_stack.py: a trigger that fires within a second of the deferral can
    # resume the task before the scheduler has processed the executor's "success" of the deferring workload,
    # which Airflow then reads as a state changed externally and fails the task.
    emulator_server.configure(**{**dataclasses.asdict(emulator_config), "duration": 5, "speed": 1})
    stored = trigger(ui_stack, STORED_DAG)
    other = trigger(ui_stack, OTHER_DAG)
    wait_run(ui_stack, STORED_DAG, stored)
    wait_run(ui_stack, OTHER_DAG, other)
    return {STORED_DAG: stored, OTHER_DAG: other}


def login(driver: Any, stack: AirflowStack, user: str) -> None:
    """Log in through the auth manager's own login form, as a person would."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    username, password = USERS[user]
    driver.get(f"{stack.api_url}/auth/login/")
    wait = WebDriverWait(driver, 30)
    wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "input[name='username']"))).send_keys(username)
    driver.find_element(By.CSS_SELECTOR, "input[name='password']").send_keys(password)
    driver.find_element(By.CSS_SELECTOR, "button[type='submit']").click()
    wait.until(lambda d: any(cookie["name"] == "_token" for cookie in d.get_cookies()))


def wait_until_playing(driver: Any, video: Any, timeout: float = PLAY_TIMEOUT) -> float:
    """Start the <video> (muted, as autoplay policies require) and wait until its currentTime advances."""
    driver.execute_script("arguments[0].muted = true; arguments[0].play();", video)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = driver.execute_script(
            "const v = arguments[0]; return {t: v.currentTime, err: v.error && v.error.code, rs: v.readyState};",
            video,
        )
        if state["err"]:
            raise AssertionError(f"the video failed to load: MediaError code {state['err']}")
        if state["t"] > 0.3:
            return float(state["t"])
        time.sleep(0.2)
    raise AssertionError(f"the video did not play within {timeout:.0f}s: {state}")


def cards(driver: Any, timeout: float = 30.0) -> list[Any]:
    """The page's video cards, once the page (or the frame it is in) has loaded."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, timeout).until(lambda d: d.find_elements(By.CSS_SELECTOR, "main.videos"))
    return list(driver.find_elements(By.CSS_SELECTOR, "article.card"))


def enter_frame(driver: Any, title: str) -> None:
    """Switch into the iframe in which Airflow's UI shows a plugin view."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, 30).until(
        ec.frame_to_be_available_and_switch_to_it((By.CSS_SELECTOR, f"iframe[title='{title}']"))
    )


def test_videos_page_lists_and_plays_the_runs_videos(
    ui_stack: AirflowStack, runs: dict[str, str], browser_factory: Callable[[], Any], ui_bucket: s3.S3Bucket
) -> None:
    from selenium.webdriver.common.by import By

    driver = browser_factory()
    login(driver, ui_stack, "admin")
    run_id = runs[STORED_DAG]
    result = xcom(ui_stack, STORED_DAG, run_id, "generate")
    stored = xcom(ui_stack, STORED_DAG, run_id, "store")

    # The page inside Airflow's UI (Browse -> Runway videos): Airflow frames the plugin's page.
    driver.get(f"{ui_stack.api_url}/plugin/runway-videos")
    enter_frame(driver, "Runway videos")
    # Newest first: this module's two runs come before any earlier video (e.g. the review DAG's tests).
    assert {card.get_attribute("data-dag-id") for card in cards(driver)[:2]} == {STORED_DAG, OTHER_DAG}
    wait_until_playing(driver, driver.find_element(By.TAG_NAME, "video"))
    driver.switch_to.default_content()
    screenshot(driver, "01-videos-page-in-airflow")

    # The run's videos: one card with what was sent and what it cost, playing the stored copy.
    driver.get(f"{ui_stack.api_url}/runway/videos?run_id={quote(run_id, safe='')}")
    (card,) = cards(driver)
    text = card.text
    assert card.get_attribute("data-prediction-id") == result["prediction_id"]
    assert f"A red kite over green hills, {run_id}" in text
    for expected in ("gen3a_turbo", "16:9", "5 s", "42", result["prediction_id"], stored["uri"]):
        assert expected in text, f"{expected!r} not on the card:\n{text}"
    assert f"${result['metrics']['cost']:.2f}" in text
    assert f"{result['metrics']['predict_time']:.1f} s" in text
    run_link = card.find_element(By.CSS_SELECTOR, "a.run-link").get_attribute("href")
    task_link = card.find_element(By.CSS_SELECTOR, "a.task-link").get_attribute("href")
    assert run_link == f"{ui_stack.api_url}/dags/{STORED_DAG}/runs/{quote(run_id, safe='')}"
    assert task_link == f"{run_link}/tasks/generate"
    video = card.find_element(By.TAG_NAME, "video")
    played = wait_until_playing(driver, video)
    screenshot(driver, "02-videos-of-one-run-playing")
    assert played > 0.3

    # Nothing secret reaches the page: no API key, no provider URL, no signed query string.
    page = driver.page_source
    assert "test-key" not in page
    assert result["video_url"] not in page and "/v1/outputs/" not in page
    assert "X-Amz-" not in page and "Signature=" not in page
    src = video.get_attribute("src")
    assert src.startswith(f"{ui_stack.api_url}/runway/media?")

    # The <video> plays through range requests: the bytes are the stored object's.
    cookies = {c["name"]: c["value"] for c in driver.get_cookies()}
    key = stored["uri"].split(f"{ui_bucket.name}/", 1)[1]
    body = ui_bucket.read(key)
    response = requests.get(src, headers={"Range": "bytes=100-1123"}, cookies=cookies, timeout=30)
    assert response.status_code == 206
    assert response.headers["Content-Range"] == f"bytes 100-1123/{len(body)}"
    assert response.content == body[100:1124]
    tail = requests.get(src, headers={"Range": "bytes=-10"}, cookies=cookies, timeout=30)
    assert (tail.status_code, tail.content) == (206, body[-10:])
    beyond = requests.get(src, headers={"Range": f"bytes={len(body)}-"}, cookies=cookies, timeout=30)
    assert beyond.status_code == 416


def test_filter_by_dag(ui_stack: AirflowStack, runs: dict[str, str], browser_factory: Callable[[], Any]) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import Select, WebDriverWait

    driver = browser_factory()
    login(driver, ui_stack, "admin")
    driver.get(f"{ui_stack.api_url}/runway/videos")
    assert {STORED_DAG, OTHER_DAG} <= {card.get_attribute("data-dag-id") for card in cards(driver)}
    Select(driver.find_element(By.ID, "dag_id")).select_by_visible_text(OTHER_DAG)
    unfiltered = driver.find_element(By.CSS_SELECTOR, "main.videos")
    driver.find_element(By.CSS_SELECTOR, "form.filter button").click()
    # The click returns before the filtered page loads: read the cards only once the unfiltered page is gone.
    WebDriverWait(driver, 30).until(ec.staleness_of(unfiltered))
    (card,) = cards(driver)
    assert card.get_attribute("data-dag-id") == OTHER_DAG
    assert "A paper boat on a rainy street" in card.text and "9:16" in card.text
    # No stored copy: the api-server plays the provider's output for it.
    wait_until_playing(driver, card.find_element(By.TAG_NAME, "video"))
    screenshot(driver, "03-filtered-by-dag")


def test_task_view_shows_the_video(
    ui_stack: AirflowStack, runs: dict[str, str], browser_factory: Callable[[], Any]
) -> None:
    from selenium.webdriver.common.by import By

    driver = browser_factory()
    login(driver, ui_stack, "admin")
    run_id = quote(runs[STORED_DAG], safe="")
    for task_id in ("generate", "store"):
        driver.get(f"{ui_stack.api_url}/dags/{STORED_DAG}/runs/{run_id}/tasks/{task_id}/plugin/runway-video")
        enter_frame(driver, "Runway video")
        (card,) = cards(driver)
        assert "A red kite over green hills" in card.text
        wait_until_playing(driver, card.find_element(By.TAG_NAME, "video"))
        driver.switch_to.default_content()
        screenshot(driver, f"04-task-view-{task_id}")


def test_stored_copy_plays_after_the_output_url_expired(
    ui_stack: AirflowStack, runs: dict[str, str], browser_factory: Callable[[], Any], emulator_server: Any
) -> None:
    """Once the provider forgets the prediction, its output URL is gone: the stored copy still plays."""
    from selenium.webdriver.common.by import By

    driver = browser_factory()
    login(driver, ui_stack, "admin")
    output_url = xcom(ui_stack, STORED_DAG, runs[STORED_DAG], "generate")["video_url"]
    emulator_server.reset()  # forgets every prediction: output URLs now answer 404
    assert requests.get(output_url, timeout=10).status_code == 404

    driver.get(f"{ui_stack.api_url}/runway/videos?dag_id={STORED_DAG}")
    (card,) = cards(driver)
    wait_until_playing(driver, card.find_element(By.TAG_NAME, "video"))
    screenshot(driver, "05-stored-copy-after-expiry")
    # The generate-only DAG has no copy: its media endpoint says so instead of serving an error page as video.
    cookies = {c["name"]: c["value"] for c in driver.get_cookies()}
    driver.get(f"{ui_stack.api_url}/runway/videos?dag_id={OTHER_DAG}")
    src = cards(driver)[0].find_element(By.TAG_NAME, "video").get_attribute("src")
    assert requests.get(src, cookies=cookies, timeout=30).status_code == 404


def test_a_user_sees_only_the_videos_of_dags_they_may_read(
    ui_stack: AirflowStack, runs: dict[str, str], browser_factory: Callable[[], Any]
) -> None:
    """The viewer is in team_a; OTHER_DAG is in team_b's bundle: the auth manager refuses it to the viewer."""
    from selenium.webdriver.common.by import By

    driver = browser_factory()
    login(driver, ui_stack, "viewer")
    driver.get(f"{ui_stack.api_url}/runway/videos")
    shown = {card.get_attribute("data-dag-id") for card in cards(driver)}
    assert STORED_DAG in shown and OTHER_DAG not in shown, shown
    options = {o.get_attribute("value") for o in driver.find_elements(By.CSS_SELECTOR, "#dag_id option")}
    assert STORED_DAG in options and OTHER_DAG not in options, options
    screenshot(driver, "06-viewer-sees-only-readable-dags")
    driver.get(f"{ui_stack.api_url}/runway/videos?dag_id={OTHER_DAG}")
    assert cards(driver) == []
    assert "No videos yet" in driver.find_element(By.TAG_NAME, "body").text

    cookies = {c["name"]: c["value"] for c in driver.get_cookies()}
    run = quote(runs[OTHER_DAG], safe="")
    query = f"dag_id={OTHER_DAG}&run_id={run}&task_id=generate&map_index=-1"
    for path in ("media", "task-video"):
        refused = requests.get(f"{ui_stack.api_url}/runway/{path}?{query}", cookies=cookies, timeout=30)
        assert refused.status_code == 403, (path, refused.text)
    # The same request as the admin is served: the 403 is the auth manager's answer, not a broken link.
    admin = requests.get(
        f"{ui_stack.api_url}/runway/task-video?{query}",
        headers={"Authorization": f"Bearer {ui_stack.token}"},
        timeout=30,
    )
    assert admin.status_code == 200 and "A paper boat on a rainy street" in admin.text


def test_unauthenticated_user_is_refused(
    ui_stack: AirflowStack, runs: dict[str, str], browser_factory: Callable[[], Any]
) -> None:
    from selenium.webdriver.common.by import By

    driver = browser_factory()  # a new browser: no session cookie
    media = (
        f"{ui_stack.api_url}/runway/media?dag_id={STORED_DAG}&run_id={quote(runs[STORED_DAG], safe='')}"
        "&task_id=store&map_index=-1"
    )
    for url in (f"{ui_stack.api_url}/runway/videos", media):
        driver.get(url)
        body = driver.find_element(By.TAG_NAME, "body").text
        assert "Not authenticated" in body, body
        assert "article" not in driver.page_source
        assert requests.get(url, timeout=30).status_code == 401
    screenshot(driver, "07-unauthenticated-refused")
    # A forged token is refused too, never treated as anonymous.
    forged = requests.get(media, cookies={"_token": "not-a-jwt"}, timeout=30)
    assert forged.status_code in (401, 403)
