"""The web console in a real browser (Debian's headless Chromium, driven by Playwright)
against a running ``anon serve`` with Orthanc as PACS and as destination: the system of
tests/e2e/test_index_api.py, three studies with planted PHI retrieved, one object
quarantined, and a token of each role.

A coordinator signs in, queries the PACS, retrieves a study and watches it complete, sees
it de-identified, views an image and its elements, exports the patient and downloads the
workbook; an operator's pages never hold an original value; a phi-reader sees one only on
asking. A screenshot of each page goes to the test's temporary folder, and with
``CONSOLE_SCREENSHOTS=<folder>`` also to that folder, as docs/console.md shows them.
"""

from __future__ import annotations

import base64
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openpyxl
import pytest
from playwright.sync_api import expect, sync_playwright

from tests import synth
from tests.e2e import test_index_api
from tests.e2e.test_index_api import RSNA_COLUMNS, ApiSystem, original_values
from tests.e2e.test_retrieve import STUDIES

pytestmark = pytest.mark.integration


# The running system of the index API's tests (and the database it needs), one per module.
running = test_index_api.running
module_database = test_index_api.module_database

CHROMIUM = "/usr/bin/chromium"
ARGUMENTS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--no-first-run"]
VIEWPORT = {"width": 1100, "height": 700}
ROOT = Path(__file__).resolve().parents[2]
CONSOLE_FILES = ROOT / "services" / "index_api" / "console"


class Shots:
    """Screenshots of the pages: full pages as PNG in the test's folder; with
    CONSOLE_SCREENSHOTS set, the visible part as WebP (small) in that folder too."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        wanted = os.environ.get("CONSOLE_SCREENSHOTS")
        self.docs = (ROOT / wanted) if wanted and not Path(wanted).is_absolute() else (
            Path(wanted) if wanted else None)
        if self.docs is not None:
            self.docs.mkdir(parents=True, exist_ok=True)

    def take(self, page: Any, name: str) -> None:
        page.screenshot(path=str(self.folder / f"{name}.png"), full_page=True)
        if self.docs is not None:
            session = page.context.new_cdp_session(page)
            try:
                shot = session.send("Page.captureScreenshot", {"format": "webp", "quality": 60})
            finally:
                session.detach()
            (self.docs / f"console-{name}.webp").write_bytes(base64.b64decode(shot["data"]))


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        pytest.fail("Chromium is not installed: run `make system-packages` (Debian: chromium)")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGUMENTS)
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Shots:
    return Shots(tmp_path_factory.mktemp("console-screenshots"))


class Console:
    """One browser tab on the console, with what went wrong in it (uncaught errors and
    Content Security Policy violations) and every page's document as it was shown."""

    def __init__(self, browser: Any, running: ApiSystem) -> None:
        self.base = running.api.base
        self.context = browser.new_context(viewport=VIEWPORT, accept_downloads=True)
        self.page = self.context.new_page()
        self.page.set_default_timeout(30_000)
        self.problems: list[str] = []
        self.page.on("pageerror", lambda error: self.problems.append(f"error: {error}"))
        self.page.on("console", self._console)
        self.documents: dict[str, str] = {}

    def _console(self, message: Any) -> None:
        if "Content Security Policy" in message.text or message.type == "assert":
            self.problems.append(f"console: {message.text}")

    def sign_in(self, token: str) -> None:
        self.page.goto(self.base + "/")
        self.page.get_by_label("Token").fill(token)
        self.page.get_by_label("Token").press("Enter")  # the form, from the keyboard
        self.page.locator("#tabs a").first.wait_for()

    def open(self, page_id: str) -> None:
        self.page.locator(f'#tabs a[href="#/{page_id}"]').click()
        self.page.locator(f'#tabs a[href="#/{page_id}"][aria-current="page"]').wait_for(
            state="attached")

    def keep(self, name: str) -> str:
        """The document now, kept under ``name`` (later searched for original values)."""
        content: str = self.page.content()
        self.documents[name] = self.documents.get(name, "") + content
        return content

    def unlabelled(self) -> list[str]:
        """Form controls and buttons without an accessible name."""
        found: list[str] = self.page.locator("input, select, textarea, button").evaluate_all(
            "nodes => nodes.filter(n => n.offsetParent !== null && !n.labels?.length"
            " && !n.getAttribute('aria-label') && !(n.tagName === 'BUTTON'"
            " && n.textContent.trim())).map(n => n.outerHTML.slice(0, 120))")
        return found

    def close(self) -> None:
        self.context.close()


def count(console: Console, label: str) -> int:
    return int(console.page.locator(f'[data-count="{label}"] dd').inner_text())


def wait_until(condition: Any, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.25)


def job_number(console: Console) -> int:
    started = re.compile(r"(?:Retrieve|Export) (\d+) started")
    message = console.page.locator("p.message.info", has_text=started)
    message.wait_for()
    text = message.inner_text()
    found = started.search(text)
    assert found, text
    return int(found.group(1))


def wait_job(console: Console, job: int, timeout: float = 120) -> Any:
    article = console.page.locator(f'article.job[data-job="{job}"]')
    article.wait_for(timeout=timeout * 1000)
    console.page.locator(f'article.job[data-job="{job}"].complete, '
                         f'article.job[data-job="{job}"].incomplete, '
                         f'article.job[data-job="{job}"].failed').wait_for(
        timeout=timeout * 1000)
    return article


def assert_no_original_value(documents: dict[str, str]) -> None:
    values = original_values()
    found = {name: [v for v in values if v in text] for name, text in documents.items()}
    found = {name: hits for name, hits in found.items() if hits}
    assert not found, f"original values in the pages: { {k: v[:3] for k, v in found.items()} }"


def test_the_console_is_served_without_a_token_with_headers_that_keep_it_to_itself(
    running: ApiSystem,
) -> None:
    page = running.api.get("/")
    assert page.status == 200 and page.content_type == "text/html"
    assert b'<script type="module" src="/console/app.js">' in page.body
    policy = page.headers["content-security-policy"]
    assert "default-src 'self'" in policy and "frame-ancestors 'none'" in policy
    assert "unsafe-inline" not in policy and "unsafe-eval" not in policy
    assert page.headers["x-content-type-options"] == "nosniff"
    assert page.headers["referrer-policy"] == "no-referrer"
    for name in sorted(p.name for p in CONSOLE_FILES.iterdir()):
        served = running.api.get(f"/console/{name}")
        assert served.status == 200, name
        assert served.body == (CONSOLE_FILES / name).read_bytes()
        assert served.headers["content-security-policy"] == policy
        assert served.headers["x-content-type-options"] == "nosniff"
    assert running.api.get("/console/app.js").content_type == "text/javascript"
    for missing in ("/console/nothing.js", "/console/..%2Fapi.py", "/console/"):
        answer = running.api.get(missing)
        assert answer.status == 404 and answer.content_type == "application/problem+json"
    # No answer of the API is ever put into the page as markup.
    for script in CONSOLE_FILES.glob("*.js"):
        text = script.read_text()
        assert "innerHTML" not in text.replace('"innerHTML"', "") and "eval(" not in text
        assert "localStorage" not in text and "document.cookie" not in text


def test_a_token_is_kept_in_the_tab_only_and_a_wrong_one_is_refused_plainly(
    running: ApiSystem, browser: Any, shots: Shots,
) -> None:
    console = Console(browser, running)
    try:
        page = console.page
        page.goto(console.base + "/")
        shots.take(page, "sign-in")
        page.get_by_label("Token").fill("anon_not-a-token")
        page.get_by_role("button", name="Sign in").click()
        page.get_by_text("the token is unknown or revoked").wait_for()
        assert page.evaluate("() => sessionStorage.length") == 0
        console.sign_in(running.tokens["operator"])
        assert page.locator("#who").inner_text() == "Signed in as test-operator (operator)"
        assert page.evaluate("() => [sessionStorage.length, localStorage.length,"
                             " document.cookie]") == [1, 0, ""]
        assert console.context.cookies() == []
        tabs = page.locator("#tabs a").all_inner_texts()
        assert tabs == ["Query / Retrieve", "Receiving", "Export", "Index", "Viewer",
                        "Elements", "RT sets", "Log"]
        # From the keyboard: the page's title has the focus, the tabs are just before it,
        # and a tab opened with Enter moves the focus to its page.
        focused = "() => [document.activeElement.tagName, document.activeElement.textContent]"
        assert page.evaluate(focused) == ["H2", "Query / Retrieve"]
        page.keyboard.press("Shift+Tab")
        assert page.evaluate(focused) == ["A", "Log"]
        page.keyboard.press("Enter")
        page.locator('#tabs a[href="#/log"][aria-current="page"]').wait_for()
        assert page.evaluate(focused) == ["H2", "Log"]
        page.keyboard.press("Tab")
        assert page.evaluate("() => document.activeElement.labels[0].textContent") == "Service"
        page.get_by_role("button", name="Sign out").click()
        page.get_by_label("Token").wait_for()
        assert page.evaluate("() => sessionStorage.length") == 0
        # A token revoked while signed in: the next call is refused and the console asks
        # for a token again.
        token = running.token("operator", "console-revoked")
        console.sign_in(token)
        running.system.anon("token", "revoke", "console-revoked", check=True)
        console.open("index")
        page.get_by_text("the token is unknown or revoked. Sign in again.").wait_for()
        assert page.locator("#sign-in").is_visible()
        assert page.evaluate("() => sessionStorage.length") == 0
        assert not console.problems, console.problems
    finally:
        console.close()


def test_an_operator_retrieves_views_and_exports_and_no_page_holds_an_original_value(
    running: ApiSystem, browser: Any, shots: Shots, tmp_path: Path,
) -> None:
    console = Console(browser, running)
    page = console.page
    try:
        console.sign_in(running.tokens["operator"])
        before = running.api.get("/api/v1/status", running.tokens["operator"]).json()

        # Query / Retrieve: every study of the PACS, three marked imported.
        console.open("query")
        page.get_by_label("Study date from").fill("1900-01-01")
        page.get_by_label("Study date to").fill("2099-12-31")
        page.get_by_role("button", name="Query", exact=True).click()
        page.get_by_text(f"{len(STUDIES)} studies found, 3 already imported.").wait_for()
        rows = page.locator(".results tbody tr")
        assert rows.count() == len(STUDIES)
        assert page.locator(".results tbody tr.done").count() == 3
        assert page.locator(".results .imported").count() == 3
        page.get_by_role("button", name="Select all").click()
        assert page.get_by_text(f"{len(STUDIES)} of {len(STUDIES)} selected").is_visible()
        page.get_by_role("button", name="Select none").click()
        new = page.locator(".results tbody tr:not(.done)").first
        new.get_by_role("checkbox").check()
        expected = int(new.locator("td").nth(4).inner_text())
        page.get_by_role("button", name="Retrieve the selected studies").click()
        job = job_number(console)
        console.keep("query")
        article = wait_job(console, job)
        assert "complete" in article.locator("h4").inner_text()
        summary = article.locator(".job-summary").inner_text()
        assert f"{expected} verified, 0 missing" in summary, summary
        assert article.locator(".job-summary").get_attribute("aria-live") == "polite"
        console.keep("query")
        shots.take(page, "query")
        # The accession-list mode takes the API's comments and blank lines.
        page.get_by_role("button", name="Accession list").click()
        assert page.get_by_label("Accession numbers, one per line").is_visible()
        page.get_by_label("Accession numbers, one per line").fill("// nothing but a comment\n\n")
        page.get_by_role("button", name="Retrieve the accession list").click()
        page.locator("p.message.error").wait_for()
        console.keep("query")

        # Receiving: the new study de-identified (the page refreshes by itself).
        console.open("receiving")
        wanted = before["deidentified"] + expected
        wait_until(lambda: count(console, "De-identified") == wanted, "the new objects")
        assert count(console, "Quarantined") == before["quarantined"]
        scp = page.locator(".scp").inner_text()
        assert "ANONSCP" in scp and "listening" in scp
        assert f":{before['storage_scp']['port']}" in scp
        assert page.locator(".reasons").get_by_text("burned-in-annotation").is_visible()
        assert page.get_by_role("button", name="Release").count() == 0  # admin only
        console.keep("receiving")
        shots.take(page, "receiving")

        # Index: the patients, a study's objects; the viewer and the elements.
        console.open("index")
        page.locator("table").first.wait_for()
        listed = page.locator("section[aria-labelledby=list-title] tbody tr")
        # The new study is of a patient already imported.
        wait_until(lambda: listed.count() == before["patients"], "the patients listed")
        first = listed.first
        pseudonym = first.locator("td").first.inner_text()
        first.get_by_role("button", name="Studies").click()
        page.locator(".detail h3").wait_for()
        page.get_by_role("button", name="Objects").first.click()
        page.locator(".instances tbody tr").first.wait_for()
        console.keep("index")
        shots.take(page, "index")
        page.locator(".instances").get_by_role("button", name="View").first.click()
        page.get_by_text("pixels.").wait_for()
        assert page.locator("img.frame").evaluate("img => img.naturalWidth") > 0
        assert page.locator("img.frame").get_attribute("src").startswith("blob:")
        page.get_by_label("Window centre").fill("40")
        page.get_by_label("Window width").fill("400")
        page.get_by_role("button", name="Apply window").click()
        page.get_by_text("window centre 40, width 400").first.wait_for()
        assert page.get_by_role("button", name="Next frame").is_disabled()
        console.keep("viewer")
        shots.take(page, "viewer")
        page.get_by_role("button", name="Elements of this object").click()
        page.get_by_text("Transfer syntax:").wait_for()
        assert "Explicit VR Little Endian" in page.locator(".syntax").inner_text()
        headers = page.locator("#page table").first.locator("thead th").all_inner_texts()
        assert headers == ["Element", "Name", "VR", "VM", "Length", "Data"]
        name_row = page.locator("tr", has_text="(0010,0010)")
        assert name_row.locator("td").nth(1).inner_text() == "Patient's Name"
        assert name_row.locator("td").nth(5).inner_text().startswith(before["site_id"])
        assert page.locator("tr.depth-1").count() > 0  # sequence items, indented
        console.keep("elements")
        shots.take(page, "elements")

        # Export: the patient, its export date once the job completes.
        console.open("export")
        row = page.locator("tbody tr", has_text=pseudonym)
        assert row.locator("td").nth(5).inner_text() == "—"
        expect(page.get_by_label("Export enabled")).to_be_checked()
        instances = int(row.locator("td").nth(3).inner_text())
        row.get_by_role("checkbox").check()
        page.get_by_role("button", name="Export the selected patients").click()
        export_job = job_number(console)
        article = wait_job(console, export_job)
        assert "complete" in article.locator("h4").inner_text()
        summary = article.locator(".job-summary").inner_text()
        assert f"{instances} sent, 0 failed, 0 remaining" in summary, summary
        assert len(running.destination.instances()) >= instances
        assert pseudonym in article.locator("tbody").inner_text()
        wait_until(lambda: row.locator("td").nth(5).inner_text() != "—", "the export date")
        exported = running.api.get(f"/api/v1/patients/{pseudonym}",
                                   running.tokens["operator"]).json()["exported_at"]
        assert exported and row.locator("time").get_attribute("datetime") == exported
        console.keep("export")
        shots.take(page, "export")

        # The workbook, through fetch and a blob URL.
        console.open("index")
        with page.expect_download() as download:
            page.get_by_role("button", name="Download the Excel workbook").click()
        saved = tmp_path / download.value.suggested_filename
        download.value.save_as(saved)
        assert saved.name.startswith("index-") and saved.suffix == ".xlsx"
        sheet = openpyxl.load_workbook(saved, read_only=True).worksheets[0]
        table = list(sheet.iter_rows(values_only=True))
        assert list(table[0][:len(RSNA_COLUMNS)]) == RSNA_COLUMNS
        assert len(table) - 1 == before["studies"] + 1
        phi_columns = [i for i, name in enumerate(table[0]) if name and (
            str(name).startswith("PHI-") or name == "DateOffset")]
        assert all(r[i] in (None, "") for r in table[1:] for i in phi_columns)
        assert pseudonym in {r[1] for r in table[1:]}
        console.keep("index")

        for page_id in ("rt-sets", "log"):
            console.open(page_id)
            page.locator("table").first.wait_for()
            console.keep(page_id)
            shots.take(page, page_id)
        assert page.locator("tbody tr").first.inner_text()

        for page_id in ("query", "receiving", "export", "index", "viewer", "elements",
                        "rt-sets", "log"):
            console.open(page_id)
            page.wait_for_timeout(300)
            assert not console.unlabelled(), (page_id, console.unlabelled())
            console.keep(page_id)
        assert_no_original_value(console.documents)
        assert not console.problems, console.problems
    finally:
        console.close()


def test_an_admin_checks_the_filter_at_its_line_saves_it_and_releases_from_quarantine(
    running: ApiSystem, browser: Any, shots: Shots,
) -> None:
    console = Console(browser, running)
    page = console.page
    admin = running.tokens["admin"]
    try:
        console.sign_in(admin)
        assert page.locator("#tabs a").all_inner_texts()[-3:] == ["RT sets", "Log", "Audit"]
        console.open("filter")
        editor = page.get_by_label("The filter")
        editor.wait_for()
        editor.fill('Modality.equals("CT")\n+ Modality.sparkles("MR")\n')
        page.get_by_role("button", name="Validate").click()
        problem = page.locator(".problem")
        problem.get_by_text(re.compile(r"^Line 2: ")).wait_for()
        assert page.locator(".gutter .bad").inner_text() == "2"
        assert editor.get_attribute("aria-invalid") == "true"
        page.get_by_role("button", name="Go to line 2").click()
        assert page.evaluate("() => document.activeElement.id") == "filter-text"
        assert page.evaluate("() => { const t = document.activeElement;"
                             " return t.value.slice(t.selectionStart, t.selectionEnd); }") == (
            '+ Modality.sparkles("MR")')
        page.get_by_role("button", name="Save").click()
        problem.get_by_text(re.compile(r"^Line 2: ")).wait_for()
        shots.take(page, "filter")
        assert running.api.get("/api/v1/config/filter", admin).json()["source"] != "index"
        editor.fill('!Modality.equals("SR")')
        page.get_by_role("button", name="Validate").click()
        page.get_by_text("Valid").first.wait_for()
        page.get_by_role("button", name="Save").click()
        page.get_by_text(re.compile("Saved as version")).wait_for()
        saved = running.api.get("/api/v1/config/filter", admin).json()
        assert saved["source"] == "index" and saved["text"] == '!Modality.equals("SR")'
        assert page.locator("section[aria-label=History] tbody tr").count() >= 1
        page.get_by_role("button", name="Reset to the settings…").click()
        page.get_by_role("button", name="Reset: use what the settings name").click()
        page.get_by_text("Reset: what the settings name is in force again.").wait_for()
        assert running.api.get("/api/v1/config/filter", admin).json()["source"] != "index"

        console.open("script")
        page.locator("section[aria-label=History]").wait_for()
        page.wait_for_timeout(500)
        shots.take(page, "script")

        # The quarantined object released (accepting its burned-in annotation).
        console.open("receiving")
        release = page.get_by_role("button", name=re.compile("^Release the object"))
        release.first.wait_for()
        quarantined = count(console, "Quarantined")
        page.get_by_label("accept burned-in annotation").first.check()
        release.first.click()
        page.get_by_text("Released:").wait_for()
        wait_until(lambda: count(console, "Quarantined") == quarantined - 1, "the release")
        page.get_by_role("button", name="Purge…").click()
        page.get_by_role("button", name="Delete them for good").click()
        page.get_by_text(re.compile(r"quarantined objects? deleted")).wait_for()

        console.open("audit")
        page.locator("tbody tr").first.wait_for()
        actions = page.locator("tbody tr td:nth-child(6)").all_inner_texts()
        assert {"config.filter.replace", "quarantine.release"} <= set(actions), actions
        assert not console.unlabelled(), console.unlabelled()
        console.keep("audit")
        shots.take(page, "audit")
        assert_no_original_value(console.documents)
        assert not console.problems, console.problems
    finally:
        console.close()


def test_a_phi_reader_sees_original_values_only_on_asking_and_each_view_is_audited(
    running: ApiSystem, browser: Any,
) -> None:
    reader = running.tokens["phi-reader"]
    patient = STUDIES[1].patient
    expected = synth.phi_for(patient).patient_name
    patients = running.api.get("/api/v1/patients", reader, phi="true").json()["items"]
    pseudonym = {p["original"]["patient_name"]: p["pseudo_patient_id"]
                 for p in patients}[expected]
    console = Console(browser, running)
    page = console.page
    try:
        console.sign_in(reader)
        console.open("index")
        page.locator("section[aria-labelledby=list-title] tbody tr").first.wait_for()
        # Nothing original is shown before it is asked for.
        assert_no_original_value({"index": console.keep("index")})
        page.get_by_label("Pseudonymous patient ID", exact=True).fill(pseudonym)
        page.get_by_role("button", name="Search", exact=True).click()
        page.get_by_role("button", name="Show original values").click()
        assert page.locator(".original-name").inner_text() == expected
        assert page.get_by_text("this read is recorded in the audit trail").first.is_visible()
        trail = running.api.get("/api/v1/audit", running.tokens["admin"],
                                actor="test-phi-reader", limit="5").json()["items"]
        assert trail[0]["action"] == "patient.phi" and trail[0]["target"] == pseudonym
        page.get_by_role("button", name="Hide original values").click()
        assert expected not in page.content()
        # The list with original values, on the switch.
        page.get_by_label("Show original values in the list").check()
        page.locator("td.phi").first.wait_for()
        assert expected in page.locator("section[aria-labelledby=list-title]").inner_text()
        page.get_by_label("Show original values in the list").uncheck()
        page.locator("td.phi").first.wait_for(state="detached")
        assert expected not in page.content()
        # The query, with the original values on the switch.
        console.open("query")
        page.get_by_label("Show original values").check()
        page.get_by_label("Accession number").fill(STUDIES[1].accession)
        page.get_by_role("button", name="Query", exact=True).click()
        page.locator(".results td.phi").first.wait_for()
        assert expected in page.locator(".results").inner_text()
        page.get_by_label("Show original values").uncheck()
        page.locator(".results td.phi").first.wait_for(state="detached")
        assert expected not in page.locator(".results").inner_text()
        # Signing out leaves nothing of it.
        page.get_by_role("button", name="Sign out").click()
        page.get_by_label("Token").wait_for()
        assert_no_original_value({"signed out": page.content()})
        assert not console.problems, console.problems
    finally:
        console.close()
