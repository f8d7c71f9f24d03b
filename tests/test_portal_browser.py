"""The portal in a real browser (Playwright driving Debian's Chromium) against a real server: a client's first
login with its forced password change, browsing by date, a folder downloaded and compared byte for byte; a
restore request through every state with the restore really run; an incident through the contract's clocks.
Each on SQLite and on PostgreSQL."""

from __future__ import annotations

import os
import re
import tarfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect

from tests.portal_site import Site

pytestmark = pytest.mark.portal
NEW = "my own passphrase 2026"
SHOTS = os.environ.get("DOBAAS_SCREENSHOTS")  # set to write the docs' screenshots


def shot(page: Page, name: str) -> None:
    if SHOTS:
        page.screenshot(path=os.path.join(SHOTS, f"{name}.png"), full_page=True)


def first_login(page: Page, site: Site, login: str, new: str = NEW) -> None:
    page.goto(f"{site.url}/login")
    page.fill("input[name=login]", login)
    page.fill("input[name=password]", site.accounts[login])
    page.click("button:has-text('Log in')")
    expect(page).to_have_url(f"{site.url}/password")
    page.fill("input[name=old_password]", site.accounts[login])
    page.fill("input[name=new_password]", new)
    page.fill("input[name=new_password2]", new)
    page.click("button:has-text('Change password')")
    expect(page).to_have_url(f"{site.url}/")
    site.accounts[login] = new


def test_first_login_browse_by_date_and_download(site: Site, page: Page, tmp_path: Path) -> None:
    site.add_user("amelie", "acme")
    page.goto(f"{site.url}/login")
    shot(page, "login")
    page.fill("input[name=login]", "amelie")
    page.fill("input[name=password]", site.accounts["amelie"])
    page.click("button:has-text('Log in')")
    expect(page).to_have_url(f"{site.url}/password")
    expect(page.locator("main")).to_contain_text("default password")
    for path in ("/", "/snapshots", "/search?q=budget"):  # nothing else is served before the change
        page.goto(site.url + path)
        expect(page).to_have_url(f"{site.url}/password")
    page.fill("input[name=old_password]", site.accounts["amelie"])
    page.fill("input[name=new_password]", "too short")
    page.fill("input[name=new_password2]", "too short")
    page.click("button:has-text('Change password')")
    expect(page.locator(".error")).to_contain_text("12 characters")
    page.fill("input[name=old_password]", site.accounts["amelie"])
    page.fill("input[name=new_password]", NEW)
    page.fill("input[name=new_password2]", NEW)
    page.click("button:has-text('Change password')")
    expect(page).to_have_url(f"{site.url}/")
    expect(page.locator("table")).to_contain_text("fileserver")
    expect(page.locator(".box").first).to_contain_text("of 10.0 GiB subscribed")
    shot(page, "dashboard")

    # browse by date: the day's backups, then one of them, down to a folder
    page.click("text=Backups by date")
    day = datetime.now(UTC).strftime("%Y-%m-%d")
    page.fill("input[name=day]", day)
    page.click("button:has-text('Show')")
    expect(page.locator("h2")).to_have_text(day)
    rows = page.locator("main table tr td a")
    expect(rows).to_have_count(2)
    shot(page, "snapshots-by-date")
    page.goto(f"{site.url}/snapshots/{site.snapshots['acme'][0]}")
    src = site.sources["acme"]
    page.click(f"text={src}/")
    page.click("text=docs/")
    expect(page.locator("main table")).to_contain_text("budget.xlsx")
    expect(page.locator("main table")).not_to_contain_text("scratch.tmp")
    page.click("text=contracts/")
    shot(page, "browse")
    with page.expect_download() as dl:
        page.click("#download-here")
    archive = tmp_path / "download.tar"
    dl.value.save_as(archive)
    with tarfile.open(archive, encoding="utf-8", errors="surrogateescape") as tar:
        got = {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}  # type: ignore[union-attr]
    want = {f"contracts/{p.relative_to(src / 'docs' / 'contracts')}": p.read_bytes()
            for p in (src / "docs" / "contracts").rglob("*") if p.is_file()}
    assert got == want and len(got) == 3

    # search across dates: budget.xlsx changed between the two backups, two versions
    page.goto(f"{site.url}/search?q=budget.xlsx")
    expect(page.locator("main table tr")).to_have_count(3)
    shot(page, "search")


def client_and_technician(site: Site, browser: Browser, client: str, tech: str) -> tuple[Page, Page]:
    """Two browser pages, a client of acme and a technician, each past its first login."""
    site.add_user(client, "acme")
    site.add_user(tech, role="technician")
    pages = browser.new_page(), browser.new_page()
    first_login(pages[0], site, client)
    first_login(pages[1], site, tech, f"technician passphrase {tech}")
    return pages


def test_restore_request_through_every_state(site: Site, browser: Browser) -> None:
    client, tech = client_and_technician(site, browser, "carol", "theo")
    lost = site.sources["acme"] / "docs" / "contracts" / "2026" / "acme-contract.txt"
    original = lost.read_bytes()
    lost.unlink()  # the client deleted a file by mistake

    # the client ticks the file in last night's backup and asks for it back where it was
    client.goto(f"{site.url}/snapshots/{site.snapshots['acme'][1]}?path={lost.parent}")
    client.check(f"input[value='{lost}']")
    client.select_option("select[name=urgency]", "high")
    client.fill("input[name=description]", "deleted by mistake this morning")
    client.click("button:has-text('Request the restore')")
    expect(client.locator("#state")).to_have_text("requested")
    request_url = client.url

    # the technician sees it in the queue, plans it with a quote, starts it, runs the restore
    tech.goto(f"{site.url}/console")
    expect(tech.locator("main table").first).to_contain_text("high")
    tech.goto(request_url)
    tech.fill("input[name=planned_for]", "today 14:00")
    tech.fill("input[name=quote]", "included in the contract")
    tech.click("button:has-text('Plan')")
    expect(tech.locator("#state")).to_have_text("planned")
    tech.click("button:has-text('Start')")
    expect(tech.locator("#state")).to_have_text("in progress")
    assert tech.input_value("input[name=arguments]") == f"--in-place {lost}"
    tech.click("button:has-text('Run')")
    deadline = time.monotonic() + 60
    while "exit status" not in (tech.locator("#log").text_content() or ""):
        assert time.monotonic() < deadline, "the restore did not finish"
        time.sleep(0.5)
        tech.reload()
    expect(tech.locator("#log")).to_contain_text("exit status 0")
    assert lost.read_bytes() == original
    shot(tech, "request-technician")
    tech.fill("input[name=note]", "restored in place, please check")
    tech.click("button:has-text('Ask the client to check')")
    expect(tech.locator("#state")).to_have_text("awaiting check")

    # the client finds a problem and reopens; the technician hands it back; the client confirms
    client.reload()
    client.fill("input[name=note]", "the folder of 2025 is missing too")
    client.click("button:has-text('Reopen')")
    expect(client.locator("#state")).to_have_text("in progress")
    tech.reload()
    tech.fill("input[name=note]", "nothing else was in that folder in any backup")
    tech.click("button:has-text('Ask the client to check')")
    client.reload()
    client.click("button:has-text('Everything works: close')")
    expect(client.locator("#state")).to_have_text("closed")
    history = client.locator("main table").last.inner_text()
    moves = [line.split("\t")[3] for line in history.splitlines()[1:]]
    assert moves == ["requested", "planned", "in progress", "awaiting check", "in progress", "awaiting check",
                     "closed"], history
    assert "carol" in history and "theo" in history
    shot(client, "request-client")


def test_incident_through_its_clocks(site: Site, browser: Browser) -> None:
    client, tech = client_and_technician(site, browser, "dave", "ted")
    t0 = datetime(2026, 4, 27, 8, 0, tzinfo=UTC)  # Monday 10:00 in Paris

    def at(delta: timedelta) -> None:
        site.clock.fixed = t0 + delta

    try:
        _incident_story(site, client, tech, at)
    finally:
        site.clock.fixed = None


def _incident_story(site: Site, client: Page, tech: Page, at: Callable[[timedelta], None]) -> None:
    # the client phones; the technician opens the ticket at t0; the client confirms in writing 20 min later
    at(timedelta())
    tech.goto(f"{site.url}/incidents")
    tech.fill("input[name=tenant]", "acme")
    tech.fill("input[name=title]", "restore of the accounting share fails")
    tech.click("button:has-text('Open a ticket')")
    ref = tech.url.rsplit("/", 1)[1]
    assert re.fullmatch(r"INC-2026-\d{5}", ref)
    at(timedelta(minutes=20))
    client.goto(f"{site.url}/incidents/{ref}")
    expect(client.locator("#clock-start")).to_have_text("—")
    client.click("button:has-text('Confirm in writing')")
    expect(client.locator("#clock-start")).to_have_text("2026-04-27 10:00")  # the ticket's time

    # closed at 11:30; the client contests within 24 h; closed again at 15:00 the next day
    at(timedelta(hours=1, minutes=30))
    tech.reload()
    tech.fill("input[name=note]", "share permissions fixed")
    tech.click("button:has-text('Close the incident')")
    expect(tech.locator("#resolution")).to_have_text("90 min")
    mail = [m for m in site.inbox if ref in m]  # the closure reached the client's alert address
    assert len(mail) == 1 and "To: it@acme.example" in mail[0] and "contest the closure" in mail[0]
    expect(tech.locator("main")).to_contain_text("e-mailed to it@acme.example")
    at(timedelta(hours=20))
    client.goto(f"{site.url}/")
    expect(client.locator(".notice").first).to_contain_text(f"{ref} was closed")
    client.goto(f"{site.url}/incidents/{ref}")
    client.fill("input[name=note]", "still failing for the archive folder")
    client.click("button:has-text('Contest the closure')")
    expect(client.locator("#state")).to_have_text("open")
    at(timedelta(days=1, hours=7))
    tech.reload()
    tech.click("button:has-text('Close the incident')")
    expect(tech.locator("#resolution")).to_have_text(f"{31 * 60} min")
    # the report is due 20 French business days after the closure (1 and 8 May, Ascension, Whit Monday)
    expect(tech.locator("#report-due")).to_have_text("2026-06-01 (end of day)")
    # 24 h later without a contest the closure stands; the contest button is gone
    at(timedelta(days=2, hours=7, minutes=1))
    client.reload()
    expect(client.locator("#state")).to_have_text("accepted")
    expect(client.locator("button:has-text('Contest the closure')")).to_have_count(0)
    # past the deadline without a report: flagged late; filed, it is shown with its date
    at(timedelta(days=36))  # 2 June
    tech.reload()
    expect(tech.locator("#report-due")).to_contain_text("LATE")
    tech.fill("textarea[name=causes]", "an ACL change on the file server")
    tech.fill("textarea[name=fixes]", "ACL restored; the backup account is now in the share's group")
    tech.click("button:has-text('File the incident report')")
    expect(tech.locator("main")).to_contain_text("an ACL change on the file server")
    shot(tech, "incident")

    # a confirmation that comes after 30 minutes starts the clock at the confirmation, not at the ticket
    at(timedelta(days=45))
    tech.goto(f"{site.url}/incidents")
    tech.fill("input[name=tenant]", "acme")
    tech.fill("input[name=title]", "no backup last night")
    tech.click("button:has-text('Open a ticket')")
    second = tech.url.rsplit("/", 1)[1]
    assert int(second[-5:]) == int(ref[-5:]) + 1
    at(timedelta(days=45, minutes=45))
    client.goto(f"{site.url}/incidents/{second}")
    client.click("button:has-text('Confirm in writing')")
    expect(client.locator("#clock-start")).to_have_text("2026-06-11 10:45")
