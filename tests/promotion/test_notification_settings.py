"""notifications.approvals in the pipeline file, and what each answer's notification says. Pure."""

from __future__ import annotations

import pytest

from promotion.approval import Decision, Tally
from promotion.config import NOTIFICATION_BLOCK_TYPES, ApprovalPolicy, parse_pipeline
from promotion.errors import ConfigError

BASE = "store: {bucket: artifacts}\nservices: [{name: api}]\nenvironments: [{name: prod}]\n"


def test_a_block_named_by_type_and_name_with_every_event_by_default() -> None:
    p = parse_pipeline(BASE + "notifications: {approvals: {block: slack-webhook/approvers}}")
    notify = p.notifications.approvals
    assert notify is not None
    assert (notify.block_type, notify.block_name) == ("slack-webhook", "approvers")
    assert notify.events == ["requested", "decided", "timed_out"]
    assert parse_pipeline(BASE).notifications.approvals is None


@pytest.mark.parametrize(
    ("section", "expected"),
    [
        ("{block: approvers}", "notifications.approvals.block: expected 'TYPE/NAME'"),
        ("{block: slack/approvers}", "unknown notification block type 'slack'; allowed: slack-webhook"),
        ("{block: custom-webhook/Our_Team}", "block name 'Our_Team': lowercase letters, digits and '-'"),
        ("{block: custom-webhook/x, events: [sent]}", "notifications.approvals.events[0]: Input should be"),
        (
            "{block: custom-webhook/x, events: []}",
            "approvals.events: List should have at least 1",
        ),
        ("{block: custom-webhook/x, events: [decided, decided]}", "events must not repeat"),
        ("{block: custom-webhook/x, url: 'https://hooks.slack.com/T/B/X'}", "approvals.url: unknown key"),
    ],
)
def test_bad_notification_settings_are_refused_with_the_field(section: str, expected: str) -> None:
    with pytest.raises(ConfigError, match="^pipeline.yaml: ") as err:
        parse_pipeline(BASE + f"notifications: {{approvals: {section}}}", "pipeline.yaml")
    assert expected in str(err.value)


def test_the_block_types_are_prefects_own_slugs() -> None:
    from prefect.blocks.notifications import (
        CustomWebhookNotificationBlock,
        MicrosoftTeamsWebhook,
        SlackWebhook,
    )

    slugs = (SlackWebhook, MicrosoftTeamsWebhook, CustomWebhookNotificationBlock)
    assert tuple(b.get_block_type_slug() for b in slugs) == NOTIFICATION_BLOCK_TYPES


@pytest.mark.parametrize(
    ("answers", "result", "summary"),
    [
        ([("approve", "alice")], "counted", "counted (1 of 2); 1 more needed"),
        ([("approve", "alice"), ("approve", "bob")], "approved", "approved by alice, bob: the stage deploys"),
        ([("reject", "bob")], "rejected", "rejected by bob: nothing is deployed"),
        ([("approve", "dana")], "refused", "refused: 'dana' authored the commit and may not approve it"),
        ([("approve", "mallory")], "refused", "refused: 'mallory' is not an allowed approver"),
    ],
)
def test_each_answer_says_how_it_was_judged(
    answers: list[tuple[str, str]], result: str, summary: str
) -> None:
    from flows._report import decision_payload

    policy = ApprovalPolicy(approvers=["alice", "bob", "dana"], min_approvals=2)
    tally = Tally(policy=policy, commit_author="dana", requested_by=None)
    for decision, who in answers:
        d = Decision(decision=decision, approver=who, reason="r")  # type: ignore[arg-type]
        verdict = tally.add(d)
    payload = decision_payload(d, verdict, tally)
    assert payload["result"] == result
    assert payload["summary"].startswith(summary)
    assert payload["counted"] is (result != "refused")


def test_the_ui_link_in_an_event_never_carries_the_api_credential() -> None:
    from prefect.settings import PREFECT_API_URL, PREFECT_UI_URL, temporary_settings

    from flows._report import flow_run_ui_url

    with temporary_settings({PREFECT_API_URL: "http://admin:s3cret@prefect.internal:4200/api"}):
        assert flow_run_ui_url("abc") == "http://prefect.internal:4200/runs/flow-run/abc"
    with temporary_settings({PREFECT_UI_URL: "https://prefect.example.com"}):
        assert flow_run_ui_url("abc") == "https://prefect.example.com/runs/flow-run/abc"
    assert flow_run_ui_url("local") is None
