"""One error tree, mapped once at each edge: exit codes by the CLI, HTTP statuses by the webhook app.

The errors carry neither (issue 9): every PromotionError subclass gets its exit code from
``promotion.cli.exit_code_for`` and its status from ``promotion.webhook.status_for``, and the
tables below are the contract, so a new error class fails here until someone decides both.
"""

from __future__ import annotations

import importlib
import pkgutil

import pytest

import promotion
from promotion import errors
from promotion.cli import exit_code_for
from promotion.webhook import status_for


def _all_error_classes() -> list[type[errors.PromotionError]]:
    # Import every module of the core, so a subclass defined anywhere in it is seen.
    for module in pkgutil.iter_modules(promotion.__path__):
        importlib.import_module(f"promotion.{module.name}")
    found: list[type[errors.PromotionError]] = []
    todo: list[type[errors.PromotionError]] = [errors.PromotionError]
    while todo:
        cls = todo.pop()
        if cls not in found:
            found.append(cls)
            todo.extend(cls.__subclasses__())
    return found


ALL = _all_error_classes()


def _instance(cls: type[errors.PromotionError]) -> errors.PromotionError:
    # Only the class matters to the mappings; constructors take different context.
    return cls.__new__(cls)


#: Bad input: exit 2 (README "Exit codes"). Every other error is an operation that failed: exit 1.
BAD_INPUT = {
    "UsageError",
    "InvalidDigest",
    "ConfigError",
    "UnknownService",
    "UnknownEnvironment",
    "EvidenceError",
    "EvidenceUnreadable",
    "ArtifactMetadataError",
    "UnknownStack",
    "VersionMismatch",
    "SigningSecretInvalid",
    "KeyTemplateError",
    "WebhookSecretError",
    "WebhookError",
    "SourceNotServed",
    "InvalidContentLength",
    "IncompleteBody",
    "PayloadTooLarge",
    "BodyTimeout",
    "SignatureMissing",
    "SignatureInvalid",
    "StaleTimestamp",
    "DeliveryIdInvalid",
    "PayloadInvalid",
    "PromotionTargetMissing",
    "ArtifactMismatch",
    "DeliveryConflict",
}

#: The webhook's answers (its module docstring): what the sender must fix is 4xx, the receiver's
#: infrastructure 503, anything else 500 (a bug or an undecided case, logged), never a 422 default.
STATUS = {
    "SourceNotServed": 404,
    "PayloadTooLarge": 413,
    "BodyTimeout": 408,
    "SignatureMissing": 401,
    "SignatureInvalid": 401,
    "StaleTimestamp": 401,
    "DeliveryConflict": 409,
    "InvalidContentLength": 400,
    "IncompleteBody": 400,
    "DeliveryIdInvalid": 400,
    "WebhookError": 400,
    "PayloadInvalid": 422,
    "PromotionTargetMissing": 422,
    "ArtifactMismatch": 422,
    "UnknownService": 422,
    "UnknownEnvironment": 422,
    "ArtifactNotFound": 422,
    "InvalidDigest": 422,
    "InfrastructureError": 503,
    "ReceiverUnavailable": 503,
    "StoreError": 503,
    "StoreUnreachable": 503,
    "StoreUnavailable": 503,
    "StoreCredentialsMissing": 503,
    "BucketNotFound": 503,
    "AccessDenied": 503,
    "PreconditionFailed": 503,
    "LedgerContention": 503,
    "PrefectUnreachable": 503,
    "PrefectRefused": 503,
    "LockTimeout": 503,
    "LockLost": 503,
    "NotificationFailed": 503,
}
NOT_A_DELIVERY_ANSWER = 500


def test_the_tree_has_the_classes_the_tables_name() -> None:
    names = {c.__name__ for c in ALL}
    assert len(names) == len(ALL), "two error classes share a name: `Class: message` is ambiguous"
    assert BAD_INPUT <= names and set(STATUS) <= names, (BAD_INPUT | set(STATUS)) - names


@pytest.mark.parametrize("cls", ALL, ids=lambda c: c.__name__)
def test_every_error_gets_its_exit_code_from_the_cli_mapping(cls: type[errors.PromotionError]) -> None:
    assert exit_code_for(_instance(cls)) == (2 if cls.__name__ in BAD_INPUT else 1)


@pytest.mark.parametrize("cls", ALL, ids=lambda c: c.__name__)
def test_every_error_gets_its_status_from_the_webhook_mapping(cls: type[errors.PromotionError]) -> None:
    assert status_for(_instance(cls)) == STATUS.get(cls.__name__, NOT_A_DELIVERY_ANSWER)


def test_an_error_unknown_to_both_mappings_is_500_and_exit_1() -> None:
    class NobodyDecided(errors.PromotionError):
        pass

    exc = NobodyDecided("new")
    assert status_for(exc) == 500
    assert exit_code_for(exc) == 1


@pytest.mark.parametrize("cls", ALL, ids=lambda c: c.__name__)
def test_no_error_class_carries_an_exit_code_or_a_status(cls: type[errors.PromotionError]) -> None:
    assert not {"exit_code", "status_code"} & set(vars(cls)), f"{cls.__name__} maps itself"


def test_every_error_is_defined_in_promotion_errors() -> None:
    elsewhere = sorted(f"{c.__module__}.{c.__name__}" for c in ALL if c.__module__ != "promotion.errors")
    assert not elsewhere, elsewhere


def test_the_module_docstring_draws_every_class() -> None:
    doc = errors.__doc__ or ""
    missing = sorted(c.__name__ for c in ALL if c.__name__ not in doc)
    assert not missing, missing


def test_every_cli_command_goes_through_the_one_wrapper() -> None:
    from promotion import cli

    the_wrapper = cli._one_line_errors(lambda: None).__code__
    groups = [cli.app, *(g.typer_instance for g in cli.app.registered_groups)]
    commands = [c for g in groups if g is not None for c in g.registered_commands]
    callbacks = [cli.app.registered_callback.callback] if cli.app.registered_callback else []
    functions = {getattr(c.callback, "__name__", "") for c in commands}
    assert {
        "publish",
        "status",
        "ledger_verify",
        "config_validate",
        "run",
        "approve",
        "webhook_serve",
    } <= functions
    assert callbacks, "the root callback (--config) is registered"
    for callback in [*(c.callback for c in commands), *callbacks]:
        assert callback is not None and callback.__code__ is the_wrapper, callback
