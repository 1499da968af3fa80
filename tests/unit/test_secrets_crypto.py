"""Sealing stored secrets, and scrubbing values out of text: no store, no runtime."""

from __future__ import annotations

import pytest

from runtime.errors import FunctionDefinitionError, SecretUndecryptable
from runtime.registry import function
from runtime.secrets import SecretBox, SecretValues, scrub, scrub_json
from tests.fixtures.functions.secret_probes import SecretIn

OLD, NEW = "o" * 40, "n" * 40
ROW = b"ferry/acme/function/crm_token"


def test_a_sealed_value_opens_with_its_key_and_row_only():
    box = SecretBox(OLD)
    sealed = box.seal(b"tok-123456789", ROW)
    assert b"tok-123456789" not in sealed.encode() and sealed.startswith("v1:")
    assert box.open(sealed, ROW) == b"tok-123456789"
    assert box.seal(b"tok-123456789", ROW) != sealed  # a fresh nonce each time
    with pytest.raises(SecretUndecryptable):
        box.open(sealed, b"ferry/globex/function/crm_token")
    with pytest.raises(SecretUndecryptable):
        SecretBox(NEW).open(sealed, ROW)
    tampered = sealed[:-2] + ("A" if sealed[-2] != "A" else "B") + sealed[-1]
    with pytest.raises(SecretUndecryptable):
        box.open(tampered, ROW)


def test_previous_keys_open_what_they_sealed_and_only_the_current_key_seals():
    sealed_old = SecretBox(OLD).seal(b"value-one", ROW)
    rotating = SecretBox(NEW, [OLD])
    assert rotating.open(sealed_old, ROW) == b"value-one"
    assert not rotating.is_current(sealed_old)
    sealed_new = rotating.seal(b"value-one", ROW)
    assert rotating.is_current(sealed_new)
    with pytest.raises(SecretUndecryptable):
        SecretBox(OLD).open(sealed_new, ROW)


def test_scrub_replaces_a_value_as_is_quoted_and_url_encoded():
    values = {"crm_token": "p@ss/w0rd+x y", "other_key": "another-value"}
    text = (
        "refused p@ss/w0rd+x y; repr 'p@ss/w0rd+x y'; url ?t=p%40ss%2Fw0rd%2Bx%20y "
        "form t=p%40ss%2Fw0rd%2Bx+y; and another-value"
    )
    scrubbed = scrub(text, values)
    assert "w0rd" not in scrubbed and "another-value" not in scrubbed
    assert scrubbed.count("[secret:crm_token]") == 4 and "[secret:other_key]" in scrubbed
    assert scrub_json({"a": ["x p@ss/w0rd+x y"], "n": 1}, values) == {
        "a": ["x [secret:crm_token]"],
        "n": 1,
    }


def test_ctx_secrets_is_read_only_shows_no_value_and_names_undeclared_reads():
    values = SecretValues({"crm_token": "tok-123456789"}, ("crm_token",))
    assert values["crm_token"] == "tok-123456789"
    assert "tok-123456789" not in repr(values) + str(values) + str(dict.fromkeys(values))
    with pytest.raises(TypeError):
        values["crm_token"] = "x"  # type: ignore[index]
    with pytest.raises(KeyError, match="not among the secrets this function declares"):
        values["erp_key"]


def test_secret_names_are_checked_when_a_function_is_declared():
    for bad in (["Bad-Name"], "crm_token", [""], ["x" * 65]):
        with pytest.raises(FunctionDefinitionError, match="secrets"):

            @function(secrets=bad)
            def reads(ctx, payload: SecretIn) -> None: ...
