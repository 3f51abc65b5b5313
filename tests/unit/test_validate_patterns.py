"""The models' Java patterns (``\\p{L}``, ``\\p{Print}``, ``\\z``...) are checked, not skipped."""

from __future__ import annotations

import re

import botocore.session
import pytest

from opensage.aws.validate import _pattern, java_to_python, validate
from opensage.errors import ServiceError

_SESSION = botocore.session.get_session()


def _input(service: str, operation: str) -> object:
    return _SESSION.get_service_model(service).operation_model(operation).input_shape


@pytest.mark.parametrize("value", ["<script>", "a;b", "x\x00", 'say "hi"', "{}"])
def test_a_tag_value_outside_the_pattern_is_refused(value: str) -> None:
    tags = {"ResourceArn": "arn:aws:sagemaker:us-east-1:000000000000:model/m", "Tags": [{"Key": "k", "Value": value}]}
    with pytest.raises(ServiceError) as exc:
        validate(_input("sagemaker", "AddTags"), tags)
    assert exc.value.code == "ValidationException"
    assert "at 'tags.1.member.value'" in exc.value.message and "regular expression pattern" in exc.value.message


@pytest.mark.parametrize("value", ["", "plain", "héllo wörld", "日本語 テキスト", "a_b.c:d/e=f+g-h@i", "12\u00a034"])
def test_letters_numbers_and_spaces_of_any_script_pass(value: str) -> None:
    tags = {"ResourceArn": "arn:aws:sagemaker:us-east-1:000000000000:model/m", "Tags": [{"Key": "k", "Value": value}]}
    validate(_input("sagemaker", "AddTags"), tags)


def test_runtime_headers_must_be_printable_ascii() -> None:
    shape = _input("sagemaker-runtime", "InvokeEndpoint")
    validate(shape, {"EndpointName": "e", "Body": b"1", "CustomAttributes": "a=b", "InferenceId": "id-1"})
    for member, value in (("CustomAttributes", "caf\u00e9"), ("InferenceId", " leading"), ("InferenceId", "a\tb")):
        with pytest.raises(ServiceError, match="regular expression"):
            validate(shape, {"EndpointName": "e", "Body": b"1", member: value})


def test_java_syntax_is_translated() -> None:
    assert java_to_python(r"\A\S[\p{Print}]*\z") == r"\A\S[\x20-\x7e]*\Z"
    assert java_to_python(r"arn:[\p{Alnum}\-]+:x") == r"arn:[a-zA-Z0-9\-]+:x"
    assert java_to_python(r"[\w-_]*") == r"[\w\-_]*"
    assert java_to_python(r"(a)${1,128}") == "(a)$"
    assert re.fullmatch(java_to_python(r"\p{L}+"), "Ωmega") and not re.fullmatch(java_to_python(r"\p{L}+"), "a1")
    assert re.fullmatch(java_to_python(r"[\p{N}]+"), "12٣") and not re.fullmatch(java_to_python(r"\p{ASCII}"), "é")


def test_every_pattern_of_the_served_models_compiles_but_utf16_surrogate_ranges() -> None:
    skipped = set()
    for service in ("sagemaker", "sagemaker-runtime", "sts", "iam", "logs", "kms", "cloudwatch"):
        model = _SESSION.get_service_model(service)
        for name in model.shape_names:
            regex = model.shape_for(name).metadata.get("pattern")
            if regex and _pattern(regex) is None:
                skipped.add(regex)
    assert all("\\uD800" in regex for regex in skipped), skipped
