"""Secret masking and control-character escaping, pure: names, encodings, marks, no_log data."""

from __future__ import annotations

import base64
import html
import json
import re
import shlex
from urllib.parse import quote, quote_plus

import pytest

from fleet.inventory import Inventory
from fleet.sanitize import visible, visible_data
from fleet.secrets import MASK, Redactor, hidden_values, inventory_marked_names, is_secret_name, secret_values
from fleet.templating import render

SECRET_NAMES = [
    "hf_token",
    "HF_TOKEN",
    "token",
    "wandb_key",
    "WANDB_API_KEY",
    "api_key",
    "apikey",
    "openai_api_key",
    "db_password",
    "password",
    "passwd",
    "ssh_pass",
    "become_pass",
    "aws_secret_access_key",
    "client_secret",
    "gcp_credentials",
    "credential",
    "session_cookie",
    "authorization",
    "http_auth",
    "auth",
    "private_key",
    "privatekey",
    "access_key",
    "AccessKey",
    "api_tokens",
    "api_url",
]
PLAIN_NAMES = [
    "key",
    "tokenizer",
    "tokenizer_name",
    "max_tokens",
    "max_new_tokens",
    "public_key",
    "host_key",
    "key_file",
    "private_key_file",
    "bypass",
    "compass",
    "rapids",
    "capital",
    "user",
    "address",
    "port",
    "known_hosts",
    "host_key_checking",
    "secrets",
    "passthrough",
]


@pytest.mark.parametrize("name", SECRET_NAMES)
def test_secret_names(name):
    assert is_secret_name(name)


@pytest.mark.parametrize("name", PLAIN_NAMES)
def test_names_that_are_not_secret(name):
    assert not is_secret_name(name)


TOKEN = "hf_AbC/123+xyz=Q&é"


def transformed(value: str) -> list[str]:
    """What templates and hosts make of a value: each must be masked."""
    raw = value.encode()
    return [
        value,
        render("{{ v | urlencode }}", {"v": value}),
        quote(value, safe=""),
        re.sub("%[0-9A-F]{2}", lambda m: m.group(0).lower(), quote(value, safe="")),
        quote_plus(value),
        render("{{ v | tojson }}", {"v": value}),
        json.dumps(value)[1:-1],
        shlex.quote(value),
        render("{{ v | quote }}", {"v": value}),
        html.escape(value),
        base64.b64encode(raw).decode(),
        base64.urlsafe_b64encode(raw).decode(),
        raw.hex(),
    ]


@pytest.mark.parametrize("form", transformed(TOKEN))
def test_every_encoding_of_a_secret_is_masked(form):
    redactor = Redactor(secret_values({"hf_token": TOKEN}))
    shown = redactor.text(f"before {form} after")
    assert shown.startswith("before ") and shown.endswith(" after")
    assert MASK in shown
    assert form not in shown


@pytest.mark.parametrize("prefix", ["", "u:", "us:", "user:", "Bearer "])
def test_base64_of_data_holding_a_secret_at_any_offset(prefix):
    redactor = Redactor({TOKEN})
    encoded = base64.b64encode(prefix.encode() + TOKEN.encode() + b"!tail").decode()
    shown = redactor.text(encoded)
    assert MASK in shown
    # What is left unmasked is at most the characters that mix the secret with its neighbours.
    assert len(shown.replace(MASK, "")) <= len(encoded) - len(base64.b64encode(TOKEN.encode())) + 6


def test_cut_summary_masks_the_part_of_a_secret_before_the_ellipsis():
    redactor = Redactor({"s3cr3t-value"})
    assert redactor.text("run echo s3cr3t…") == f"run echo {MASK}…"
    assert redactor.text("run echo s3cr3t-value and s3c…") == f"run echo {MASK} and {MASK}…"


def test_marked_names_nested_values_and_numbers():
    found = secret_values(
        {
            "secrets": ["run_name", "pin"],
            "run_name": "team-alpha-run",
            "pin": 123456,
            "api_port": 8000,  # a number under a secret-looking name is not masked everywhere
            "max_tokens": 2048,
            "key": "~/.ssh/id_ed25519",
            "credentials": {"user": "svc-user", "pass": "pw-nested"},
            "job": {"wandb_key": "wk-in-a-mapping"},
            "api_tokens": ["tok-one-1", "tok-two-2"],
        }
    )
    assert found == {"team-alpha-run", "123456", "svc-user", "pw-nested", "wk-in-a-mapping", "tok-one-1", "tok-two-2"}


def test_inventory_marks_count_from_every_group_and_host():
    inv = Inventory(source="test")
    inv.group("all").vars.update({"secrets": ["run_name"]})
    inv.add_host("a", "gpu", {"secrets": ["other_name"], "run_name": "r-123456", "other_name": "o-123456"})
    assert inventory_marked_names(inv) == {"run_name", "other_name"}
    # The host's own list would override the group's in merged vars; the marks still add up.
    assert secret_values(inv.host("a").vars, marked=inventory_marked_names(inv)) == {"r-123456", "o-123456"}


def test_scrub_masks_secret_keys_whatever_their_length_and_keeps_the_marks_list():
    redactor = Redactor({"longer-secret"}, names={"run_name"})
    data = {"password": "x", "run_name": "ab", "secrets": ["run_name"], "note": "has longer-secret in it"}
    masked = {"password": MASK, "run_name": MASK, "secrets": ["run_name"], "note": f"has {MASK} in it"}
    assert redactor.scrub(data) == masked


def test_short_values_are_not_masked_in_free_text():
    redactor = Redactor(secret_values({"password": "abc"}))
    assert redactor.text("abc abcdef") == "abc abcdef"


def test_no_log_output_becomes_secret_for_later_output():
    values = hidden_values({"rc": 0, "stdout": "hf_from_a_file_123\nok\n", "stderr": ""})
    assert "hf_from_a_file_123" in values
    assert "ok" not in values  # too short to mask everywhere


def test_redactor_show_escapes_control_characters_too():
    redactor = Redactor({"secret-value"})
    assert redactor.show("\x1b]0;secret-value\x07") == f"\\x1b]0;{MASK}\\x07"
    assert redactor.show({"m": ["\x1b[2J"]}) == {"m": ["\\x1b[2J"]}


CONTROL = [
    ("\x1b]0;owned\x07", "\\x1b]0;owned\\x07"),
    ("\x1b[2J\x1b[H", "\\x1b[2J\\x1b[H"),
    ("a\rb", "a\\x0db"),
    ("a\r\nb", "a\nb"),
    ("\x00\x08\x7f", "\\x00\\x08\\x7f"),
    ("\x9b31m", "\\x9b31m"),  # C1 CSI
    ("abc\u202edcba", "abc\\u202edcba"),  # right-to-left override
    ("tab\tand\nnewline", "tab\tand\nnewline"),
    ("plain ü 日本", "plain ü 日本"),
]


@pytest.mark.parametrize(("raw", "shown"), CONTROL)
def test_control_characters_are_rendered_escaped(raw, shown):
    assert visible(raw) == shown
    assert visible(visible(raw)) == shown  # escaping twice changes nothing


def test_visible_data_escapes_keys_and_nested_values():
    assert visible_data({"\x1bk": ["\x07", 3, None]}) == {"\\x1bk": ["\\x07", 3, None]}


def test_overlapping_secrets_the_longest_is_masked_whole():
    redactor = Redactor(["abcd", "abcdef", "bcdefgh"])
    assert redactor.text("xabcdefx abcdx abcde bcdefghi") == f"x{MASK}x {MASK}x {MASK}e {MASK}i"


def test_many_hidden_values_stay_bounded_and_all_masked():
    output = "\n".join(f"line number {i} of a long no_log output" for i in range(1000))
    values = hidden_values({"stdout": output})
    assert len(values) == 200
    redactor = Redactor(values)
    shown = redactor.text(output)
    assert shown.count(MASK) >= 200 and "line number 5 of a long no_log output" not in shown
