"""`multitask serve`: the search page in headless Chromium (Debian's chromium and chromedriver, driven by
Selenium), and its caption and answer routes, on the session's tiny trained checkpoints."""
import contextlib
import json
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

import multitask
from multitask.api import Model
from multitask.cli import main as cli_main
from multitask.search_index import SearchIndex, update_index
from multitask.serve import bind

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--window-size=1100,1000"]
CLIPS = [f"video{k}" for k in range(44, 56)]  # the tiny set's retrieval test clips


@pytest.fixture(scope="module")
def indexed(e2e_run, tmp_path_factory) -> dict:
    """An index of twelve clips made with the retrieval checkpoint, and the captions of those clips."""
    base, run, _ = e2e_run("retrieval")
    folder, out = tmp_path_factory.mktemp("serve-clips"), tmp_path_factory.mktemp("serve") / "index"
    for name in CLIPS:
        shutil.copy(base / "data" / "videos" / "all" / f"{name}.mp4", folder)
    checkpoint = run / "checkpoints" / "last"
    model = multitask.load(checkpoint)
    update_index(model.encode_frames, model.pool_frames, str(checkpoint.resolve()), folder, out, model.decoder)
    sentences = json.loads((base / "data" / "MSRVTT_data.json").read_text())["sentences"]
    captions = {s["video_id"]: s["caption"] for s in reversed(sentences) if s["video_id"] in CLIPS}  # the first
    return {"model": model, "index": out, "captions": captions, "e2e_run": e2e_run}


def a_query_its_clip_wins(indexed) -> tuple[str, list[tuple[str, float]]]:
    """A clip's caption that the model ranks that clip first for (else the first clip's), with the ranking."""
    ranked = {clip: indexed["model"].search(text, 10, index=indexed["index"])
              for clip, text in indexed["captions"].items()}
    clip = next((c for c, found in ranked.items() if found[0][0] == c), CLIPS[0])
    return indexed["captions"][clip], ranked[clip]


@contextlib.contextmanager
def serving(model: Model, index: Path) -> Iterator[str]:
    """The page of `multitask serve INDEX --port 0` on a thread of this process (the model is loaded already)."""
    server, sock, address = bind(model, SearchIndex(index), "127.0.0.1", 0, rerank=200)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        yield address
    finally:
        server.should_exit = True
        thread.join(30)


def chromium(profile: Path):
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    if not (CHROMIUM.is_file() and CHROMEDRIVER.is_file()):
        pytest.skip("needs Debian's chromium and chromium-driver (apt-get install -y chromium chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)  # with the driver's path given too, Selenium Manager fetches nothing
    for flag in [*FLAGS, f"--user-data-dir={profile}"]:
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)


def test_search_page_in_a_browser(indexed, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    query, expected = a_query_its_clip_wins(indexed)
    driver = chromium(tmp_path / "profile")
    try:
        with serving(indexed["model"], indexed["index"]) as address:
            driver.get(address)
            WebDriverWait(driver, 30).until(lambda d: "12 videos" in d.find_element(By.ID, "info").text)
            driver.find_element(By.ID, "query").send_keys(query + Keys.ENTER)
            results = WebDriverWait(driver, 60).until(lambda d: d.find_elements(By.CSS_SELECTOR, ".result"))
            assert [r.get_attribute("data-id") for r in results] == [video for video, _ in expected]
            assert f"score {expected[0][1]:.4f} ({expected[0][0]})" in results[0].text
            assert results[0].text.startswith(f"1. {expected[0][0]}.mp4")
            strip_width = "const i = document.querySelector('.result img'); return i.complete ? i.naturalWidth : 0"
            assert WebDriverWait(driver, 30).until(lambda d: d.execute_script(strip_width)) == 4 * 64  # four frames
            results[0].click()
            WebDriverWait(driver, 30).until(lambda d: d.find_element(By.ID, "caption").text)
            note = "This checkpoint (task=retrieval) has no {} head"
            assert driver.find_element(By.ID, "caption").text.startswith(note.format("caption"))
            assert driver.find_element(By.ID, "answer").text.startswith(note.format("qa"))
            assert not driver.find_element(By.ID, "question").is_enabled()
            shot = tmp_path / "search_page.png"
            assert driver.save_screenshot(str(shot))
            assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 5000
    finally:
        driver.quit()


def test_serve_command_refuses_what_is_not_an_index(tmp_path, capsys):
    assert cli_main(["serve", str(tmp_path), "--port", "0"]) == 2
    assert f"{tmp_path} is not an index (no index.json)" in capsys.readouterr().err


def test_caption_and_answer_routes(indexed):
    from fastapi.testclient import TestClient

    from multitask.serve import create_app

    index = SearchIndex(indexed["index"])
    run = {task: indexed["e2e_run"](task)[1] / "checkpoints" / "last" for task in ("caption", "qa")}
    captioner = TestClient(create_app(multitask.load(run["caption"]), index, rerank=200))
    heads = captioner.get("/api/info").json()["heads"]
    assert heads["caption"] is None and heads["qa"].startswith("This checkpoint (task=caption) has no qa head")
    caption = captioner.get("/api/caption/3")
    assert caption.status_code == 200 and caption.json()["caption"].strip()
    assert captioner.get("/api/caption/12").status_code == 404
    assert captioner.post("/api/answer", json={"clip": 0, "question": "what?"}).status_code == 409
    answerer = TestClient(create_app(multitask.load(run["qa"]), index, rerank=200))
    answer = answerer.post("/api/answer", json={"clip": 3, "question": "what colour is the shape?"})
    assert answer.json()["answer"] in json.loads((run["qa"] / "answers.json").read_text())
    assert answerer.post("/api/answer", json={"clip": 3, "question": " "}).status_code == 422
    searched = answerer.get("/api/search", params={"q": "a red ball"})
    assert searched.status_code == 400 and "no retrieval head" in searched.json()["detail"]
