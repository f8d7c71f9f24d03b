"""S3 backend (boto3): a vault in a bucket of S3-compatible object storage (Ceph RGW, SeaweedFS, AWS).

- Write-once: every put carries ``If-None-Match: *`` (refused with 412 when the name exists). Where a server
  ignores it, the vault's content-addressed names make an overwrite rewrite the same bytes.
- Immutability: the provider creates the bucket with Object Lock and a default retention; every object the
  client writes is then locked for that many days. The client's key can still put *delete markers*: nothing is
  lost, readers say "deleted by a client", and ``undelete`` (provider) removes the markers.
- Deletions are the provider's on an object-locked vault (``provider=True``: maintenance, undelete); the client
  releases only its own lock objects. A locked version refuses deletion: ``ObjectLocked`` (a PermissionError).
- Transient failures (connection reset, 5xx, throttling) are retried with backoff by botocore's standard mode.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlparse

from orchestrator.errors import BadInput, DobaasError, UsageError
from orchestrator.vault.backend import AlreadyExists, ObjectLocked, ObjectMissing

log = logging.getLogger(__name__)

#: objects above this size go up in parts (a pack is 16 MiB by default; larger --pack-size vaults use parts)
MULTIPART_THRESHOLD = 64 * 2**20
PART_SIZE = 16 * 2**20
#: the provider's record of the bucket's lock, readable by the client (plain JSON: it holds no secret)
IMMUTABILITY = "immutability"
LOCKS_PREFIX = "locks/"
ABANDONED_UPLOAD = timedelta(days=1)


@dataclass
class S3Options:
    endpoint: str | None = None  # https://s3.example.fr; None: AWS
    region: str | None = None
    access_key: str | None = None
    secret_key: str | None = None
    ca_file: str | None = None
    #: the provider's key: may delete (maintenance) and remove delete markers; clients only add objects
    provider: bool = False
    connect_timeout: float = 15.0


def parse_url(url: str) -> tuple[str, str]:
    """``s3://BUCKET[/PREFIX]`` → (bucket, prefix with a trailing slash or empty)."""
    u = urlparse(url)
    if u.scheme != "s3" or not u.hostname or u.query or u.port:
        raise BadInput(f"vault URL {url!r}: expected s3://BUCKET[/PREFIX] (the endpoint is remote.endpoint)")
    bucket = u.netloc
    prefix = u.path.strip("/")
    if ".." in prefix.split("/"):
        raise BadInput(f"vault URL {url!r}: '..' in the prefix")
    return bucket, (prefix + "/") if prefix else ""


def _code(e: Exception) -> str:
    return str(getattr(e, "response", {}).get("Error", {}).get("Code", ""))


def _status(e: Exception) -> int:
    return int(getattr(e, "response", {}).get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)


def _delete_marker(e: Exception) -> bool:
    headers = getattr(e, "response", {}).get("ResponseMetadata", {}).get("HTTPHeaders", {})
    return str(headers.get("x-amz-delete-marker", "")).lower() == "true"


class S3Backend:
    def __init__(self, url: str, options: S3Options) -> None:
        import boto3
        from botocore.config import Config

        self.bucket, self.prefix = parse_url(url)
        self.options = options
        endpoint = options.endpoint.rstrip("/") if options.endpoint else None
        self.location = f"s3://{self.bucket}/{self.prefix}".rstrip("/") + (f" at {endpoint}" if endpoint else "")
        if not options.access_key or not options.secret_key:
            raise UsageError(f"vault {url}: no S3 credentials (remote.access_key_env/secret_key_env in the "
                             "policy, or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)")
        config = Config(retries={"max_attempts": 8, "mode": "standard"}, max_pool_connections=32,
                        connect_timeout=options.connect_timeout, read_timeout=120,
                        s3={"addressing_style": "path"},
                        request_checksum_calculation="when_required", response_checksum_validation="when_required")
        self.client: Any = boto3.session.Session().client(
            "s3", endpoint_url=endpoint, region_name=options.region or "us-east-1",
            aws_access_key_id=options.access_key, aws_secret_access_key=options.secret_key,
            verify=options.ca_file or True, config=config)
        self._immutability: dict | bool | None = False  # False: not read yet
        self._lock = threading.Lock()

    def _key(self, name: str) -> str:
        if name.startswith("/") or ".." in name.split("/"):
            raise ValueError(f"invalid object name {name!r}")
        return self.prefix + name

    def _fail(self, e: Exception, what: str) -> DobaasError | Exception:
        """A botocore error as a one-line DobaasError (or a PermissionError the vault layers understand)."""
        code, status = _code(e), _status(e)
        if code in ("AccessDenied", "AllAccessDisabled") or status == 403:
            return PermissionError(f"{self.location}: {what} refused ({code or status})")
        if code == "NoSuchBucket":
            return DobaasError(f"{self.location}: the bucket {self.bucket} does not exist")
        return DobaasError(f"{self.location}: {what} failed: {code or type(e).__name__} {e}")

    # ---- objects ---------------------------------------------------------------------------------------
    def put(self, name: str, data: bytes | memoryview) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        key = self._key(name)
        body = bytes(data)
        try:
            if len(body) > MULTIPART_THRESHOLD:
                self._put_multipart(key, body)
            else:
                self.client.put_object(Bucket=self.bucket, Key=key, Body=body, IfNoneMatch="*")
        except ClientError as e:
            if _status(e) == 412 or _code(e) == "PreconditionFailed":
                raise AlreadyExists(name) from None
            raise self._fail(e, f"writing {name}") from None
        except BotoCoreError as e:
            raise DobaasError(f"{self.location}: writing {name} failed: {e}") from None

    def _put_multipart(self, key: str, body: bytes) -> None:
        up = self.client.create_multipart_upload(Bucket=self.bucket, Key=key)["UploadId"]
        try:
            parts = []
            for n, off in enumerate(range(0, len(body), PART_SIZE), start=1):
                r = self.client.upload_part(Bucket=self.bucket, Key=key, UploadId=up, PartNumber=n,
                                            Body=body[off:off + PART_SIZE])
                parts.append({"PartNumber": n, "ETag": r["ETag"]})
            self.client.complete_multipart_upload(Bucket=self.bucket, Key=key, UploadId=up, IfNoneMatch="*",
                                                  MultipartUpload={"Parts": parts})
        except BaseException:
            try:
                self.client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=up)
            except Exception:  # maintenance aborts what is left (remove_temporaries)
                pass
            raise

    def _hidden(self, key: str) -> bool:
        """Whether the newest version of ``key`` is a delete marker (some servers do not say so on GET)."""
        try:
            return any(k == key and marker and v.get("IsLatest") for k, v, marker in self._versions(key))
        except Exception:
            return False

    def _missing(self, name: str, e: Exception) -> ObjectMissing:
        if _delete_marker(e) or self._hidden(self._key(name)):
            return ObjectMissing(f"{name} (deleted by a client: a delete marker hides it; the provider restores it "
                                 "with 'dobaas vault undelete')")
        return ObjectMissing(name)

    def get(self, name: str) -> bytes:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return bytes(self.client.get_object(Bucket=self.bucket, Key=self._key(name))["Body"].read())
        except ClientError as e:
            if _code(e) in ("NoSuchKey", "404") or _status(e) == 404:
                raise self._missing(name, e) from None
            raise self._fail(e, f"reading {name}") from None
        except BotoCoreError as e:
            raise DobaasError(f"{self.location}: reading {name} failed: {e}") from None

    def get_range(self, name: str, offset: int, length: int) -> bytes:
        from botocore.exceptions import BotoCoreError, ClientError

        if length <= 0:
            return b""
        rng = f"bytes=-{-offset}" if offset < 0 else f"bytes={offset}-{offset + length - 1}"
        try:
            data = self.client.get_object(Bucket=self.bucket, Key=self._key(name), Range=rng)["Body"].read()
        except ClientError as e:
            if _status(e) == 404:
                raise self._missing(name, e) from None
            if _status(e) == 416:  # the range starts past the end
                return b""
            raise self._fail(e, f"reading {name}") from None
        except BotoCoreError as e:
            raise DobaasError(f"{self.location}: reading {name} failed: {e}") from None
        return bytes(data[:length])

    def exists(self, name: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.client.head_object(Bucket=self.bucket, Key=self._key(name))
            return True
        except ClientError as e:
            if _status(e) == 404:
                return False
            raise self._fail(e, f"looking up {name}") from None

    def list(self, prefix: str) -> Iterator[tuple[str, int]]:
        from botocore.exceptions import ClientError

        base = self._key(prefix.strip("/")) + "/" if prefix.strip("/") else self.prefix
        try:
            for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=base):
                for obj in page.get("Contents", []):
                    yield obj["Key"][len(self.prefix):], int(obj["Size"])
        except ClientError as e:
            raise self._fail(e, f"listing {prefix}") from None

    def _versions(self, prefix: str) -> Iterator[tuple[str, dict, bool]]:
        """(key, entry, is_delete_marker) of every version below ``prefix`` (a key or a key prefix)."""
        pages = self.client.get_paginator("list_object_versions").paginate(Bucket=self.bucket, Prefix=prefix)
        for page in pages:
            for v in page.get("Versions", []):
                yield v["Key"], v, False
            for m in page.get("DeleteMarkers", []):
                yield m["Key"], m, True

    def delete(self, name: str) -> None:
        """Delete every version of ``name`` (provider), or release a lock object (anyone). On a vault without
        Object Lock the client may delete (its own local-style prune)."""
        from botocore.exceptions import ClientError

        key = self._key(name)
        lock = self.immutability()
        locked_vault = lock is not None
        if name.startswith(LOCKS_PREFIX) and (locked_vault or not self.options.provider):
            try:  # a lock is released by hiding it: its versions expire with the bucket's retention
                self.client.delete_object(Bucket=self.bucket, Key=key)
            except ClientError as e:
                raise self._fail(e, f"deleting {name}") from None
            return
        if locked_vault and not self.options.provider:
            raise PermissionError(f"{self.location} is under Object Lock: deletions are the provider's "
                                  "(retention is applied by its 'dobaas vault maintain')")
        bypass = self.options.provider and (lock or {}).get("mode") == "GOVERNANCE"
        found = False
        try:
            for k, v, _marker in list(self._versions(key)):
                if k != key:
                    continue
                found = True
                args: dict[str, Any] = {"Bucket": self.bucket, "Key": key, "VersionId": v["VersionId"]}
                if bypass:
                    args["BypassGovernanceRetention"] = True
                self.client.delete_object(**args)
        except ClientError as e:
            if _status(e) == 403 and locked_vault:
                until = self._until(key)
                raise ObjectLocked(f"{name} is under Object Lock retention"
                                   + (f" until {until:%Y-%m-%d %H:%M} UTC" if until else ""),
                                   until.isoformat() if until else None) from None
            raise self._fail(e, f"deleting {name}") from None
        if not found:
            raise ObjectMissing(name)

    def _until(self, key: str) -> datetime | None:
        """When the retention of ``key``'s current version ends, if the storage says."""
        try:
            return self.client.get_object_retention(Bucket=self.bucket, Key=key)["Retention"]["RetainUntilDate"]
        except Exception:
            return None

    def close(self) -> None:
        self.client.close()

    # ---- provider operations ----------------------------------------------------------------------------
    def immutability(self) -> dict | None:
        """The lock the provider recorded at creation ({"mode", "days"}), or None for a vault without one."""
        with self._lock:
            if self._immutability is False:
                try:
                    self._immutability = json.loads(self.get(IMMUTABILITY))
                except ObjectMissing:
                    self._immutability = None
                except ValueError:
                    raise DobaasError(f"{self.location}: its {IMMUTABILITY} record is not JSON") from None
            return self._immutability  # type: ignore[return-value]

    def create_bucket(self, object_lock_days: int | None, mode: str) -> None:
        """Create the bucket (with Object Lock and a default retention when asked) and record the lock.
        Run with the provider's key; an existing bucket is used as it is (asking for a lock on a bucket made
        without Object Lock fails with the server's error)."""
        from botocore.exceptions import ClientError

        try:
            self.client.head_bucket(Bucket=self.bucket)
            exists = True
        except ClientError as e:
            if _status(e) not in (404, 400):
                raise self._fail(e, "looking up the bucket") from None
            exists = False
        try:
            if not exists:
                args: dict[str, Any] = {"Bucket": self.bucket}
                if object_lock_days:
                    args["ObjectLockEnabledForBucket"] = True
                self.client.create_bucket(**args)
            if object_lock_days:
                self.client.put_object_lock_configuration(Bucket=self.bucket, ObjectLockConfiguration={
                    "ObjectLockEnabled": "Enabled",
                    "Rule": {"DefaultRetention": {"Mode": mode, "Days": object_lock_days}}})
        except ClientError as e:
            raise self._fail(e, "creating the bucket with Object Lock" if object_lock_days
                             else "creating the bucket") from None
        if object_lock_days:
            record = {"mode": mode, "days": object_lock_days, "since": datetime.now(UTC).isoformat()}
            self.put(IMMUTABILITY, json.dumps(record).encode())
            self._immutability = record

    def undelete(self) -> dict:
        """Remove the delete markers a client put over the vault's objects (its lock objects excepted): every
        version is still there under Object Lock, so the vault is whole again."""
        from botocore.exceptions import ClientError

        removed, keys = 0, set()
        try:
            for key, m, marker in list(self._versions(self.prefix)):
                if not marker or not m.get("IsLatest") or key[len(self.prefix):].startswith(LOCKS_PREFIX):
                    continue
                self.client.delete_object(Bucket=self.bucket, Key=key, VersionId=m["VersionId"])
                removed += 1
                keys.add(key)
        except ClientError as e:
            raise self._fail(e, "removing delete markers") from None
        # a key whose newest version is gone entirely (deleted version, no marker) cannot be brought back
        log.info("%s: removed %d delete marker(s)", self.location, removed)
        return {"markers_removed": removed, "objects_restored": len(keys)}

    def remove_temporaries(self) -> int:
        """Abort multipart uploads a killed backup left (older than a day: a live one is never cut)."""
        removed = 0
        limit = datetime.now(UTC) - ABANDONED_UPLOAD
        pages = self.client.get_paginator("list_multipart_uploads").paginate(Bucket=self.bucket, Prefix=self.prefix)
        for page in pages:
            for up in page.get("Uploads", []):
                if up["Initiated"] < limit:
                    self.client.abort_multipart_upload(Bucket=self.bucket, Key=up["Key"], UploadId=up["UploadId"])
                    removed += 1
        return removed
