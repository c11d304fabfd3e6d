"""Kafka security settings reach every client: aiokafka's and FastStream's alike."""

from __future__ import annotations

import ssl

import pytest
from faststream.security import BaseSecurity, SASLPlaintext, SASLScram512

from feedbackloop.kafka import KafkaConnection


def test_plaintext_has_no_security() -> None:
    connection = KafkaConnection("k:9092")
    assert connection.faststream_security() is None
    assert "ssl_context" not in connection.client_args()


def test_sasl_ssl_scram() -> None:
    connection = KafkaConnection(
        "k:9093", security_protocol="SASL_SSL", sasl_mechanism="SCRAM-SHA-512",
        sasl_username="svc", sasl_password="pw",
    )
    security = connection.faststream_security()
    assert isinstance(security, SASLScram512)
    assert (security.username, security.password, security.use_ssl) == ("svc", "pw", True)
    args = connection.client_args()
    assert isinstance(args["ssl_context"], ssl.SSLContext)
    assert (args["sasl_mechanism"], args["sasl_plain_username"]) == ("SCRAM-SHA-512", "svc")


def test_sasl_plaintext_and_tls_only() -> None:
    plain = KafkaConnection("k", security_protocol="SASL_PLAINTEXT", sasl_mechanism="PLAIN",
                            sasl_username="u", sasl_password="p").faststream_security()
    assert isinstance(plain, SASLPlaintext) and not plain.use_ssl
    tls = KafkaConnection("k", security_protocol="SSL").faststream_security()
    assert type(tls) is BaseSecurity and tls.use_ssl


@pytest.mark.parametrize(
    ("protocol", "mechanism"), [("SASL_SSL", "GSSAPI"), ("SASL_SSL", None), ("TLS", None)]
)
def test_unsupported_settings_are_refused(protocol: str, mechanism: str | None) -> None:
    with pytest.raises(ValueError, match="unsupported"):
        KafkaConnection("k", security_protocol=protocol, sasl_mechanism=mechanism
                        ).faststream_security()
