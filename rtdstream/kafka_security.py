"""Connecting to a secured Kafka cluster: one set of client options for every Kafka client, checked first.

Managed and on-premises clusters require TLS and authentication. The
``RTD_KAFKA_*`` settings become aiokafka's keyword arguments here
(:func:`client_options`, bootstrap servers included) and Faust's credentials
(:func:`faust_credentials`), so every client of every process (worker,
bridge, web feed, status, bench) connects the same way.

aiokafka reports a refused password or an untrusted certificate only as
"Unable to bootstrap" (the cause goes to its log), so a process would retry
what no retry can fix, as if the broker were down. :func:`check_credentials`
opens one connection itself first, where the cause is still at hand, and turns
it into a :class:`KafkaCredentialsRefused` naming the setting to fix.
"""

from __future__ import annotations

import asyncio
import ssl
from typing import TYPE_CHECKING, Any

from aiokafka.conn import create_conn
from aiokafka.errors import KafkaError, SaslAuthenticationFailed, UnsupportedSaslMechanismError
from aiokafka.helpers import create_ssl_context

from rtdstream.config import KafkaSettings
from rtdstream.errors import UserError

if TYPE_CHECKING:
    from faust.types.auth import CredentialsT

#: Keyword arguments of an aiokafka client (producer, consumer, admin).
ClientOptions = dict[str, Any]


class KafkaCredentialsRefused(UserError):
    """The broker refused the configured credentials or TLS settings; the message names the setting."""


def client_options(settings: KafkaSettings) -> ClientOptions:
    """``bootstrap_servers`` and the security options for an aiokafka client."""
    options: ClientOptions = {
        "bootstrap_servers": settings.bootstrap_servers,
        "security_protocol": settings.kafka_security_protocol,
    }
    if settings.kafka_security_protocol.startswith("SASL_"):
        assert settings.kafka_password is not None  # the settings require it with SASL
        options.update(
            sasl_mechanism=settings.kafka_sasl_mechanism,
            sasl_plain_username=settings.kafka_username,
            sasl_plain_password=settings.kafka_password.get_secret_value(),
        )
    if settings.kafka_security_protocol.endswith("SSL"):
        options["ssl_context"] = tls_context(settings)
    return options


def tls_context(settings: KafkaSettings) -> ssl.SSLContext:
    """Verify the brokers against RTD_KAFKA_CA_FILE (else the system's CAs); present a client certificate if set."""
    return create_ssl_context(
        cafile=str(settings.kafka_ca_file) if settings.kafka_ca_file else None,
        certfile=str(settings.kafka_cert_file) if settings.kafka_cert_file else None,
        keyfile=str(settings.kafka_key_file) if settings.kafka_key_file else None,
    )


def faust_credentials(settings: KafkaSettings) -> CredentialsT | None:
    """The worker's ``broker_credentials``: the same connection as :func:`client_options` gives the others."""
    import faust  # only the worker needs it; the other commands connect without importing Faust

    protocol = settings.kafka_security_protocol
    if protocol == "PLAINTEXT":
        return None
    context = tls_context(settings) if protocol.endswith("SSL") else None
    if protocol == "SSL":
        assert context is not None
        return faust.SSLCredentials(context)
    assert settings.kafka_password is not None
    return faust.SASLCredentials(
        username=settings.kafka_username,
        password=settings.kafka_password.get_secret_value(),
        ssl_context=context,
        mechanism=settings.kafka_sasl_mechanism,
    )


async def check_credentials(settings: KafkaSettings, *, timeout: float = 10.0) -> None:
    """Raise :class:`KafkaCredentialsRefused` if a bootstrap broker refuses the credentials or TLS settings.

    Only those: a broker that cannot be reached is the callers' to wait for, as before.
    Nothing to check with PLAINTEXT.
    """
    if settings.kafka_security_protocol == "PLAINTEXT":
        return
    options = client_options(settings)
    host, _, port = settings.bootstrap_servers.split(",")[0].rpartition(":")
    try:
        conn = await asyncio.wait_for(
            create_conn(
                host, int(port),
                security_protocol=options["security_protocol"],
                ssl_context=options.get("ssl_context"),
                sasl_mechanism=options.get("sasl_mechanism", "PLAIN"),
                sasl_plain_username=options.get("sasl_plain_username"),
                sasl_plain_password=options.get("sasl_plain_password"),
            ),
            timeout,
        )
    except SaslAuthenticationFailed as exc:
        raise KafkaCredentialsRefused(
            f"the broker refused RTD_KAFKA_USERNAME/RTD_KAFKA_PASSWORD ({settings.kafka_sasl_mechanism}): {exc}"
        ) from None
    except UnsupportedSaslMechanismError:
        raise KafkaCredentialsRefused(
            f"the broker does not offer RTD_KAFKA_SASL_MECHANISM={settings.kafka_sasl_mechanism}"
        ) from None
    except ssl.SSLCertVerificationError as exc:
        raise KafkaCredentialsRefused(
            f"the broker's certificate did not verify against RTD_KAFKA_CA_FILE "
            f"({settings.kafka_ca_file or 'the system CAs'}): {exc.verify_message}"
        ) from None
    except ssl.SSLError as exc:
        raise KafkaCredentialsRefused(
            f"TLS with the broker failed (RTD_KAFKA_SECURITY_PROTOCOL={settings.kafka_security_protocol}): {exc}"
        ) from None
    except (OSError, TimeoutError, KafkaError):
        return  # unreachable, or gone mid-handshake: the callers wait for the broker as they always do
    conn.close()
