from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from promotion.config import load_pipeline, parse_pipeline
from promotion.errors import ConfigError, UnknownEnvironment, UnknownService

REPO = Path(__file__).resolve().parents[2]

BASE = """
store: {bucket: artifacts}
services: [{name: api}]
environments:
"""


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as exc:
        parse_pipeline(text, "pipe.yaml")
    assert str(exc.value).startswith("pipe.yaml:")
    return exc.value.problems


def test_the_shipped_examples_are_valid() -> None:
    p = load_pipeline(REPO / "promotion.yaml", apply_env=False)
    assert p.environment_names == ["dev", "staging", "prod"]
    prod = p.environment("prod")
    assert prod.approval is not None and prod.approval.min_approvals == 1
    assert prod.approval.timeout == dt.timedelta(hours=24)
    assert set(p.webhooks.sources) == {"standard", "github", "gitlab"}
    full = load_pipeline(REPO / "examples" / "pipelines" / "full.yaml", apply_env=False)
    assert {g.kind for e in full.environments for g in e.gates} == {
        "tests", "coverage", "scan", "soak", "window", "policy", "http", "prometheus"
    }  # fmt: skip


def test_unknown_key_names_the_field_path() -> None:
    (p,) = problems(BASE + "  - name: dev\n    gatez: []\n")
    assert p.startswith("environments[0](dev).gatez: unknown key")


def test_unknown_key_inside_a_gate() -> None:
    (p,) = problems(BASE + "  - name: dev\n    gates: [{kind: tests, min_pass: 1}]\n")
    assert p.startswith("environments[0](dev).gates[0].min_pass: unknown key")


@pytest.mark.parametrize(
    ("section", "expected"),
    [
        ("services", "services: Value error, duplicate name 'api'"),
        ("environments", "environments: Value error, duplicate name 'dev'"),
    ],
)
def test_duplicate_names(section: str, expected: str) -> None:
    text = (
        "store: {bucket: artifacts}\n"
        + ("services: [{name: api}, {name: api}]\n" if section == "services" else "services: [{name: api}]\n")
        + (
            "environments: [{name: dev}, {name: dev}]\n"
            if section == "environments"
            else "environments: [{name: dev}]\n"
        )
    )
    (p,) = problems(text)
    assert "duplicate name" in p and p.startswith(section)


def test_empty_pipeline_is_refused() -> None:
    (p,) = problems("store: {bucket: artifacts}\nservices: [{name: api}]\nenvironments: []\n")
    assert p.startswith("environments:") and "at least 1" in p
    (p,) = problems("")
    assert "empty" in p


def test_threshold_out_of_range() -> None:
    (p,) = problems(BASE + "  - name: staging\n    gates: [{kind: tests, min_pass_rate: 1.5}]\n")
    assert p.startswith("environments[0](staging).gates[0].min_pass_rate:")
    assert "less than or equal to 1" in p and "(got 1.5)" in p


def test_unknown_gate_kind_lists_the_allowed_ones() -> None:
    (p,) = problems(BASE + "  - name: dev\n    gates: [{kind: vibes}]\n")
    assert "unknown gate kind 'vibes'" in p
    assert "tests, coverage, scan, perf, soak, window, policy, http, prometheus" in p


def test_missing_gate_kind() -> None:
    (p,) = problems(BASE + "  - name: dev\n    gates: [{min_pass_rate: 1}]\n")
    assert "missing 'kind'" in p


def test_duplicate_yaml_keys_are_refused_not_silently_merged() -> None:
    (p,) = problems("store: {bucket: a1b}\nstore: {bucket: c2d}\nservices: []\nenvironments: []\n")
    assert "duplicate key 'store'" in p and "line 2" in p


def test_invalid_yaml_reports_line_and_column() -> None:
    (p,) = problems("store: {bucket: [\n")
    assert "invalid YAML" in p and "line" in p


def test_several_problems_are_reported_together() -> None:
    text = BASE + (
        "  - name: dev\n    gates: [{kind: coverage}]\n"
        "  - name: Prod!\n    approval: {approvers: [a], min_approvals: 2}\n"
    )
    ps = problems(text)
    assert len(ps) == 3
    assert any("set min_line_rate and/or min_branch_rate" in p for p in ps)
    assert any(p.startswith("environments[1](Prod!).name") for p in ps)
    assert any("min_approvals is 2 but only 1 approvers" in p for p in ps)


def test_bad_timezone_and_duration() -> None:
    text = BASE + (
        "  - name: prod\n    gates:\n"
        "      - {kind: window, deny: [{start_day: fri, start: '16:00', end_day: mon, end: '08:00',"
        " timezone: Mars/Olympus}]}\n"
        "      - {kind: soak, min_duration: soon}\n"
    )
    ps = problems(text)
    assert any("unknown time zone 'Mars/Olympus'" in p for p in ps)
    assert any("'soon' is not a duration" in p for p in ps)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file; pass --config FILE or set PROMOTION_CONFIG"):
        load_pipeline(tmp_path / "nope.yaml")


def test_environment_overrides(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    f = tmp_path / "p.yaml"
    f.write_text(BASE + "  - name: dev\n")
    monkeypatch.setenv("PROMOTION_S3_ENDPOINT_URL", "http://127.0.0.1:9999")
    monkeypatch.setenv("PROMOTION_S3_BUCKET", "other-bucket")
    monkeypatch.setenv("PROMOTION_S3_PREFIX", "team-a")
    monkeypatch.setenv("PROMOTION_S3_REGION", "eu-central-1")
    p = load_pipeline(f)
    assert str(p.store.endpoint_url) == "http://127.0.0.1:9999/"
    assert (p.store.bucket, p.store.prefix, p.store.region) == ("other-bucket", "team-a/", "eu-central-1")
    monkeypatch.setenv("PROMOTION_S3_BUCKET", "Bad_Bucket")
    with pytest.raises(ConfigError, match="PROMOTION_S3_BUCKET"):
        load_pipeline(f)


def test_lookup_errors_name_what_exists() -> None:
    p = parse_pipeline(BASE + "  - name: dev\n")
    with pytest.raises(UnknownService, match="declared services: api"):
        p.service("web")
    with pytest.raises(UnknownEnvironment, match="environments: dev"):
        p.environment("prod")


def _owners(owners: str) -> str:
    services = f"services: [{{name: api, owners: [{owners}]}}]\n"
    return "store: {bucket: artifacts}\n" + services + "environments: [{name: dev}]\n"


def test_owners_name_one_target_each_and_never_a_secret() -> None:
    ok = parse_pipeline(
        _owners(
            '{name: team-api, block: "slack-webhook/api-team"}, '
            '{name: oncall, webhook: {url: "https://hooks.example/x", secret_env: API_ONCALL_WEBHOOK_SECRET}}'
        ),
        "pipe.yaml",
    )
    assert [o.target for o in ok.service("api").owners] == [
        "block slack-webhook/api-team",
        "signed webhook, secret in $API_ONCALL_WEBHOOK_SECRET",
    ]
    (both,) = problems(
        _owners('{name: x, block: "slack-webhook/a", webhook: {url: "https://h/", secret_env: S}}')
    )
    assert "give exactly one of block or webhook" in both
    (none,) = problems(_owners("{name: x}"))
    assert "give exactly one of block or webhook" in none
    (creds,) = problems(_owners('{name: x, webhook: {url: "https://u:p@h/", secret_env: S}}'))
    assert "must not carry credentials" in creds
    (secret,) = problems(_owners('{name: x, webhook: {url: "https://h/", secret_env: "whsec_abc+/="}}'))
    assert "is not an environment variable name" in secret
    (block,) = problems(_owners('{name: x, block: "pager/y"}'))
    assert "unknown notification block type 'pager'" in block
    (dup,) = problems(_owners('{name: x, block: "slack-webhook/a"}, {name: x, block: "slack-webhook/b"}'))
    assert "owner names must not repeat" in dup
