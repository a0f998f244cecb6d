"""The try-it page in a real headless Chromium against a live local server.

The page reads ``?context=...&question=...`` from its URL and asks at once, so Chromium's
``--dump-dom`` (after a virtual-time budget for the fetch) shows the answered page without
any browser-automation dependency. Skipped when no Chromium binary is installed
(Debian: ``apt-get install chromium``).
"""

import html
import re
import shutil
import socket
import subprocess
import threading
import time
from urllib.parse import urlencode

import pytest

pytest.importorskip("fastapi")
uvicorn = pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")

from helpers import CONTEXTS  # noqa: E402
from pocketqa.inference.answerer import QuestionAnswerer  # noqa: E402
from pocketqa.serve.app import create_app  # noqa: E402

CHROMIUM = next((b for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None)
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no chromium binary on PATH (apt-get install chromium)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def live_servers(tiny_bert_dir):
    """Servers on 127.0.0.1: one that answers, one that always abstains, one that needs a key."""
    urls, running = {}, []
    for name, threshold, key in (("answers", None, None), ("abstains", -1e9, None), ("keyed", None, "s3cret"),
                                 ("bundled", None, None)):
        model = None if name == "bundled" else tiny_bert_dir
        qa = QuestionAnswerer.from_pretrained(model, device="cpu", threshold=threshold)
        port = free_port()
        app = create_app(qa, api_key=key)
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        deadline = time.monotonic() + 20
        while not server.started:
            if time.monotonic() > deadline or not thread.is_alive():
                pytest.fail(f"uvicorn did not start on port {port}")
            time.sleep(0.05)
        urls[name] = f"http://127.0.0.1:{port}"
        running.append((server, thread))
    yield urls
    for server, thread in running:
        server.should_exit = True
        thread.join(timeout=10)


def dump_dom(url: str, tmp_path, offline: bool = False) -> str:
    """Loads ``url`` in headless Chromium and returns the DOM after the page's scripts ran.

    ``offline``: every host name but the local server's fails to resolve, as on a server
    without internet access (a page that needs a CDN then stays blank).
    """
    cmd = [
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--disable-dev-shm-usage", f"--user-data-dir={tmp_path / 'chromium-profile'}",
        "--virtual-time-budget=10000", "--dump-dom", url,
    ]
    if offline:
        cmd.insert(1, "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=90)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def marks(dom: str) -> list[str]:
    return [html.unescape(m) for m in re.findall(r"<mark>(.*?)</mark>", dom, flags=re.S)]


def status(dom: str) -> str:
    found = re.search(r'<div id="status"[^>]*>(.*?)</div>', dom, flags=re.S)
    return html.unescape(found.group(1)) if found else ""


# The second passage starts with an emoji: JS strings count it as two UTF-16 units, the
# API's offsets as one code point, so a page slicing naively would shift the highlight.
@pytest.mark.parametrize("context", [CONTEXTS[0][1], "\N{GRINNING FACE} " + CONTEXTS[0][1]], ids=["ascii", "emoji"])
def test_page_highlights_the_apis_answer(live_servers, tmp_path, context):
    question = "Who was the leader of the Norse?"
    base = live_servers["answers"]
    api = httpx.post(f"{base}/v1/answer", json={"question": question, "context": context}).json()
    assert not api["abstained"]  # the tiny model's threshold is 0 and its null odds are negative
    best = api["answers"][0]

    dom = dump_dom(f"{base}/?{urlencode({'context': context, 'question': question})}", tmp_path)
    assert marks(dom) == [best["answer"]], status(dom)
    assert status(dom).startswith(f"Answer: {best['answer']}") and f"{best['score']:.3f}" in status(dom)
    # The mark sits at the API's offsets: the text before it is the context up to start.
    view = re.search(r'<div id="passage-view">(.*?)<mark>', dom, flags=re.S).group(1)
    assert html.unescape(view) == context[: best["start"]]


def test_page_says_when_the_passage_holds_no_answer(live_servers, tmp_path):
    question, context = "What is the capital of Germany?", CONTEXTS[1][1]
    base = live_servers["abstains"]
    assert httpx.post(f"{base}/v1/answer", json={"question": question, "context": context}).json()["abstained"]

    dom = dump_dom(f"{base}/?{urlencode({'context': context, 'question': question})}", tmp_path)
    assert marks(dom) == []
    assert status(dom).startswith("No answer in this passage")


def others(dom: str) -> str:
    found = re.search(r'<div id="others"[^>]*>(.*?)</div>', dom, flags=re.S)
    return html.unescape(found.group(1)) if found else ""


# A SQuAD 2.0 dev passage (CC BY-SA 4.0) and a question the bundled model abstains on although
# its best span ("1060s") outweighs the null answer in the n-best softmax.
HERVE = ("One of the first Norman mercenaries to serve as a Byzantine general was Hervé in the 1050s. By then "
         "however, there were already Norman mercenaries serving as far away as Trebizond and Georgia. They were "
         "based at Malatya and Edessa, under the Byzantine duke of Antioch, Isaac Komnenos. In the 1060s, Robert "
         "Crispin led the Normans of Edessa against the Turks.")


def test_page_scores_agree_with_the_decision(live_servers, tmp_path):
    base = live_servers["bundled"]
    question = "When did Herve go up against the Turks?"
    api = httpx.post(f"{base}/v1/answer", json={"question": question, "context": HERVE, "top_k": 3}).json()
    assert api["abstained"] and api["answerability"] < 0.5 < api["answers"][0]["score"]
    dom = dump_dom(f"{base}/?{urlencode({'context': HERVE, 'question': question})}", tmp_path)
    assert status(dom).startswith("No answer in this passage") and f"answerability {api['answerability']:.3f}" in status(dom)
    assert others(dom) == ""  # no meaningless 0.000 candidates after an abstention

    question = "In what country is Normandy located?"
    context = "The Normans gave their name to Normandy, a region in France. They were descended from Norse raiders."
    api = httpx.post(f"{base}/v1/answer", json={"question": question, "context": context, "top_k": 3}).json()
    assert not api["abstained"] and api["answerability"] >= 0.5
    dom = dump_dom(f"{base}/?{urlencode({'context': context, 'question': question})}", tmp_path)
    assert f"answerability {api['answerability']:.3f}" in status(dom)
    shown = [api["answers"][0]["answer"]] + [c.rsplit(" (", 1)[0] for c in others(dom).removeprefix("Other candidates: ").split(", ") if c]
    spans = {a["answer"]: (a["start"], a["end"]) for a in api["answers"]}
    for i, a in enumerate(shown):  # distinct: no shown candidate overlaps another ("France." after "France")
        for b in shown[:i]:
            (s1, e1), (s2, e2) = spans[a], spans[b]
            assert e1 <= s2 or e2 <= s1, (a, b)


def test_page_asks_for_the_key_when_the_server_has_one(live_servers, tmp_path):
    query = urlencode({"context": CONTEXTS[1][1], "question": "What is the capital of France?"})
    dom = dump_dom(f"{live_servers['keyed']}/?{query}", tmp_path)
    assert '<div id="key-row">' in dom  # no longer hidden
    assert status(dom).startswith("Error 401") and "X-API-Key" in status(dom)
    assert marks(dom) == []


def test_docs_render_swagger_ui_without_internet(live_servers, tmp_path):
    dom = dump_dom(f"{live_servers['answers']}/docs", tmp_path, offline=True)
    # Swagger UI built its page from /openapi.json: the API's title and its operations.
    assert re.search(r'<div class="swagger-ui"', dom), dom[-2000:]
    assert re.search(r'class="info"', dom) and "pocketqa" in dom
    assert re.search(r'class="opblock opblock-post', dom)
    assert "/v1/answer/batch" in dom and "/v1/model" in dom
