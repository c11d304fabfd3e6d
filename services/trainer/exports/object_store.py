"""Where exports to object storage go: an S3-compatible store (SeaweedFS locally), its
credentials from settings (never in a repr or a log line), and the few calls the exports make."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import orjson

from feedbackloop.settings import Settings


@dataclass(frozen=True)
class ObjectStore:
    """Where exports go. `secret_access_key` never appears in a repr or a log line."""

    endpoint: str
    bucket: str
    prefix: str
    region: str
    access_key_id: str
    secret_access_key: str = field(repr=False)
    allow_http: bool = False

    def client(self) -> Any:
        from obstore.store import S3Store

        # Without credentials, unsigned requests (an anonymous store), never the machine's own.
        credentials: dict[str, Any] = (
            {"access_key_id": self.access_key_id, "secret_access_key": self.secret_access_key}
            if self.access_key_id else {"skip_signature": True}
        )
        return S3Store(
            self.bucket, endpoint=self.endpoint, region=self.region, **credentials,
            client_options={"allow_http": self.allow_http, "connect_timeout": "5s",
                            "timeout": "120s"},
            # A store that is away fails the run within a minute; the job tries again.
            retry_config={"max_retries": 3, "retry_timeout": timedelta(seconds=60)},
        )

    def key(self, *parts: str) -> str:
        return "/".join(part.strip("/") for part in (self.prefix, *parts) if part.strip("/"))

    def stream_key(self, tenant_id: str, stream: str, name: str = "") -> str:
        """A key under the tenant's stream: `<prefix>/<tenant>/<stream>/<name>`."""
        return self.key(tenant_folder(tenant_id), stream, name)


def tenant_folder(tenant_id: str) -> str:
    """The tenant's folder name: its id with "%" and "/" percent-encoded, so no tenant's
    folder is inside another's (`acme` and `acme/feedback`); other ids are kept as they are,
    and with them the names of objects written before."""
    return tenant_id.replace("%", "%25").replace("/", "%2F")


def object_store(settings: Settings) -> ObjectStore | None:
    """The configured store, or None when exports to object storage are off."""
    if not settings.object_export_endpoint:
        return None
    return ObjectStore(
        endpoint=settings.object_export_endpoint,
        bucket=settings.object_export_bucket,
        prefix=settings.object_export_prefix,
        region=settings.object_export_region,
        access_key_id=settings.object_export_access_key_id.get_secret_value(),
        secret_access_key=settings.object_export_secret_access_key.get_secret_value(),
        allow_http=settings.object_export_allow_http,
    )


async def list_keys(client: Any, prefix: str) -> list[str]:
    """Every key under `prefix` (a folder: the store's prefixes are paths)."""
    import obstore

    return [item["path"] async for batch in obstore.list(client, prefix=prefix)
            for item in batch]


async def get_bytes(client: Any, key: str) -> bytes:
    import obstore

    return bytes(await (await obstore.get_async(client, key)).bytes_async())


async def get_json(client: Any, key: str) -> Any:
    return orjson.loads(await get_bytes(client, key))


async def put_json(client: Any, key: str, document: Any) -> None:
    import obstore

    await obstore.put_async(client, key,
                            orjson.dumps(document, default=str, option=orjson.OPT_INDENT_2))
