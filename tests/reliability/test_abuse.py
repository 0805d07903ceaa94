"""Abuse: secrets in the repository, malformed configs and CSVs, oversized requests, injection strings."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from django.contrib.auth.models import User
from django.test import Client
from rest_framework.test import APIClient

from apps.bots.config import BotConfigError, load_config_dir
from apps.bots.models import Bot

ROOT = Path(__file__).resolve().parent.parent.parent

# Key-shaped strings. Patterns are assembled so this file does not match them itself.
SECRET_PATTERNS = {
    "aws access key": re.compile("AKIA" + "[0-9A-Z]{16}"),
    "private key block": re.compile("-----BEGIN" + r"( [A-Z]+)? PRIVATE KEY" + "-----"),
    "github token": re.compile("gh" + r"[pousr]_[A-Za-z0-9]{36}"),
    "slack token": re.compile("xox" + r"[abprs]-[A-Za-z0-9-]{10,}"),
    "exchange api key/secret assignment": re.compile(
        r"""(?i)\b(api[_-]?key|api[_-]?secret|secret[_-]?key|apiKey|secret)\b["']?\s*[:=]\s*["'][A-Za-z0-9+/=_-]{32,}["']"""),
    "django secret key literal": re.compile(r"""SECRET_KEY\s*=\s*["'](?!dev-only-insecure)[^"']{20,}["']"""),
}
DEV_SECRET = "dev-only-insecure-key-set-DJANGO_SECRET_KEY-in-production"


def test_given_the_tracked_files_then_none_holds_a_key_shaped_secret(figures):
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    paths = [p for p in files.decode().split("\0") if p]
    scanned, hits = 0, []
    for rel in paths:
        path = ROOT / rel
        if not path.is_file() or path.stat().st_size > 5_000_000:
            continue
        data = path.read_bytes()
        if b"\0" in data[:8192]:
            continue  # binary (gzip samples, images)
        text = data.decode("utf-8", errors="replace")
        scanned += 1
        for label, pattern in SECRET_PATTERNS.items():
            for match in pattern.finditer(text):
                hits.append(f"{rel}: {label}: {match.group(0)[:40]}")
    figures.fault = "secrets committed to the repository"
    figures.decisions = scanned
    figures.extra = {"tracked_files": len(paths), "text_files_scanned": scanned}
    assert scanned > 100
    assert hits == []
    figures.check(f"{scanned} tracked text files scanned for {len(SECRET_PATTERNS)} key shapes: none found")


def _production_settings(env_changes: dict[str, str | None]) -> subprocess.CompletedProcess:
    env = dict(os.environ, DATABASE_URL="postgres://u@127.0.0.1:5432/x", REDIS_URL="redis://127.0.0.1:6379/0",
               DJANGO_SETTINGS_MODULE="tradebot.settings.production", DJANGO_ALLOWED_HOSTS="example.org")
    for key, value in env_changes.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    code = "import django; django.setup(); from django.conf import settings; print(settings.SECRET_KEY)"
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=60)


def test_given_production_settings_then_the_dev_secret_is_never_used(figures):
    missing = _production_settings({"DJANGO_SECRET_KEY": None})
    dev = _production_settings({"DJANGO_SECRET_KEY": DEV_SECRET})
    import secrets

    key = secrets.token_urlsafe(50)
    real = _production_settings({"DJANGO_SECRET_KEY": key})
    figures.fault = "production started without a secret, or with the dev secret"
    figures.faults_injected = 2
    figures.decisions = 3
    assert missing.returncode != 0 and "DJANGO_SECRET_KEY" in missing.stderr
    assert dev.returncode != 0 and "DJANGO_SECRET_KEY" in dev.stderr
    assert real.returncode == 0 and real.stdout.strip() == key, real.stderr[-500:]
    figures.check("production refuses to start without DJANGO_SECRET_KEY or with the dev key; a real key is used")


# --- malformed config files ----------------------------------------------------------------------------------------

GOOD = {"name": "h12-good", "strategy": "sma_cross", "parameters": {"fast": 5, "slow": 20}, "exchange": "binance",
        "symbol": "BTC/USDT", "timeframe": "1h"}


@pytest.mark.parametrize(("content", "needle"), [
    ("{ not json", "invalid JSON"),
    (json.dumps({**GOOD, "name": "h12-bad", "strategy": "nope"}), "field 'strategy'"),
    (json.dumps({**GOOD, "name": "h12-bad", "parameters": {"fast": "<script>"}}), "'fast'"),
    (json.dumps({**GOOD, "name": "h12-bad", "timeframe": "7m"}), "field 'timeframe'"),
    (json.dumps({**GOOD, "name": "h12-good"}), "already used"),
], ids=["syntax", "unknown-strategy", "bad-parameter", "bad-timeframe", "duplicate-name"])
def test_given_a_malformed_bot_config_file_then_it_is_rejected_by_file_name_and_field(tmp_path, content, needle,
                                                                                      figures):
    (tmp_path / "a_good.json").write_text(json.dumps(GOOD))
    (tmp_path / "b_bad.json").write_text(content)
    with pytest.raises(BotConfigError) as excinfo:
        load_config_dir(tmp_path)
    figures.fault = f"malformed bot config ({needle})"
    figures.faults_injected = 1
    figures.decisions = 2
    assert "b_bad.json" in str(excinfo.value) and needle in str(excinfo.value)
    assert "\n" not in str(excinfo.value)  # one readable line
    figures.check(f"rejected: {str(excinfo.value)[-90:]}")


@pytest.mark.django_db
def test_given_a_csv_with_bad_rows_of_every_kind_then_each_is_rejected_by_line_and_rule_and_the_rest_stored(
        tmp_path, figures):
    from django.core.management import call_command

    from apps.market.models import Candle
    from tests.reliability.harness import real_candles

    df = real_candles(40)
    df.loc[3, "high"] = float("nan")
    df.loc[7, ["high", "low"]] = [1.0, 2.0]
    df.loc[11, "volume"] = -5.0
    df.loc[15, "timestamp"] += 7  # off the 1m grid
    df = df.drop(index=[20])  # a hole (kept: a gap, not an error)
    path = tmp_path / "candles.csv"
    df.to_csv(path, index=False)
    import io

    out = io.StringIO()
    call_command("import_candles", str(path), "--exchange", "h12csv", "--symbol", "BTC/USDT", "--timeframe", "1m",
                 "--time-label", "close", stdout=out, stderr=out)
    text = out.getvalue()
    stored = Candle.objects.filter(exchange="h12csv").count()
    figures.fault = "a candle CSV with a NaN, high<low, negative volume, an off-grid time and a hole"
    figures.faults_injected = 4
    figures.decisions = len(df)
    figures.lost = (len(df) - 4) - stored
    for rule in ("[nan]", "[high_low]", "[negative_volume]", "[off_grid]"):
        assert rule in text
    assert "rejected 4" in text
    figures.check("4 bad rows rejected, each naming its rule; the 35 valid rows stored")
    figures.assert_nothing_lost_or_doubled()


# --- oversized requests ----------------------------------------------------------------------------------------

@pytest.mark.django_db
def test_given_oversized_bodies_and_query_strings_then_refused_before_any_view_reads_them(settings, figures):
    api = APIClient()
    api.force_authenticate(User.objects.create_user("h12-big", password="pw-123456789"))
    big = json.dumps({**GOOD, "name": "h12-big", "padding": "x" * (settings.DATA_UPLOAD_MAX_MEMORY_SIZE + 1)})
    body = api.post("/api/v1/bots/", big, content_type="application/json")
    query = api.get("/api/v1/market/candles/?exchange=binance&symbol=" + "A" * (settings.TRADEBOT_MAX_QUERY_STRING + 1))
    fields = api.get("/api/v1/market/candles/?" + "&".join(f"f{i}=1" for i in range(2000)))
    admin_form = Client().post("/admin/login/", data="a=" + "x" * (settings.DATA_UPLOAD_MAX_MEMORY_SIZE + 1),
                               content_type="application/x-www-form-urlencoded")
    figures.fault = "oversized JSON body, query string, field count and form body"
    figures.faults_injected = 4
    figures.decisions = 4
    assert body.status_code == 413, body.content[:200]
    assert query.status_code == 414
    assert fields.status_code in (400, 414)
    assert admin_form.status_code in (400, 413)
    assert not Bot.objects.filter(name="h12-big").exists()
    figures.check(f"413 for a {len(big)} byte body, 414 for a long query string, {fields.status_code} for 2000 "
                  f"query fields, {admin_form.status_code} for an oversized admin form; nothing stored")


# --- injection strings -----------------------------------------------------------------------------------------

INJECTIONS = ["<script>alert('h12')</script>", "'; DROP TABLE bots; --", "\" onmouseover=\"alert(1)",
              "<img src=x onerror=alert(1)>", "1 OR 1=1"]


@pytest.mark.django_db
def test_given_injection_strings_in_bot_fields_then_stored_verbatim_and_escaped_in_the_admin(figures):
    admin = User.objects.create_superuser("h12-admin", "a@example.org", "pw-123456789")
    api = APIClient()
    api.force_authenticate(admin)
    statuses = []
    for i, text in enumerate(INJECTIONS):
        resp = api.post("/api/v1/bots/", {**GOOD, "name": f"{text} {i}", "symbol": text, "exchange": text},
                        format="json")
        statuses.append(resp.status_code)
        bad_param = api.post("/api/v1/bots/", {**GOOD, "name": f"p{i}", "parameters": {"fast": text}}, format="json")
        assert bad_param.status_code == 400 and "parameters" in json.dumps(bad_param.json())  # names the field
    web = Client()
    web.force_login(admin)
    listing = web.get("/admin/bots/bot/").content.decode()
    pages = [web.get(f"/admin/bots/bot/{b.pk}/change/").content.decode() for b in Bot.objects.all()]
    figures.fault = "SQL/HTML injection strings in bot names, exchanges, symbols and parameters"
    figures.faults_injected = 3 * len(INJECTIONS)
    figures.decisions = len(INJECTIONS)
    assert all(s in (201, 400) for s in statuses), statuses
    stored = {b.name for b in Bot.objects.all()}
    for i, text in enumerate(INJECTIONS):
        if statuses[i] == 201:
            assert f"{text} {i}" in stored  # verbatim: nothing was executed or stripped
    assert Bot.objects.count() == statuses.count(201)  # the DROP TABLE did nothing: the table answers
    for html in [listing, *pages]:
        assert "<script>alert('h12')</script>" not in html
        assert "<img src=x onerror" not in html
    if 201 in statuses:
        assert "&lt;script&gt;alert(&#x27;h12&#x27;)&lt;/script&gt;" in listing
    figures.check(f"API answers {sorted(set(statuses))}; stored strings verbatim; the admin list and change pages "
                  "escape every one; bad parameters are a 400 naming 'parameters'")
