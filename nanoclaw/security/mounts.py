"""Mount allowlist and validation (architecture.md section 4, "Mounts")."""
from __future__ import annotations

import json
import os
from pathlib import Path, PurePosixPath
from typing import Annotated

import trio
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from nanoclaw.audit import Audit
from nanoclaw.config import Settings
from nanoclaw.errors import Invalid, Unavailable
from nanoclaw.fileio import write_atomic
from nanoclaw.models import MountRequest

ALLOWLIST_FILE = "mount-allowlist.json"
CONTAINER_ROOT = PurePosixPath("/workspace/extra")
DEFAULT_BLOCKED = [
    ".ssh", ".gnupg", ".gpg", ".aws", ".azure", ".gcloud", ".kube", ".docker",
    "credentials", ".env", ".netrc", ".npmrc", ".pypirc", "id_rsa", "id_ed25519",
    "private_key", ".secret",
]


class AllowedRoot(BaseModel):
    # Unknown keys are refused: a misspelt allowReadWrite must not pass silently.
    model_config = ConfigDict(extra="forbid")

    path: str = Field(min_length=1, max_length=4096)
    allowReadWrite: bool = False
    description: str = Field(default="", max_length=1000)


class MountAllowlist(BaseModel):
    """A root given as a plain string is read-only; use the object form to allow read-write."""

    # A misspelt blockedPatterns would silently drop the operator's patterns.
    model_config = ConfigDict(extra="forbid")

    allowedRoots: list[Annotated[str, Field(min_length=1, max_length=4096)] | AllowedRoot] = Field(
        default_factory=list, max_length=256)
    blockedPatterns: list[Annotated[str, Field(min_length=1, max_length=255)]] = Field(
        default_factory=list, max_length=256, description="As sent; the built-in patterns apply as well")
    builtInBlockedPatterns: list[str] | None = Field(
        default=None, description="Read-only: patterns always blocked; ignored when sent back")


class MountDecision(BaseModel):
    allowed: bool
    canonicalHostPath: str | None = None
    containerPath: str | None = None
    readOnly: bool = True
    message: str


def _roots(allowlist: MountAllowlist) -> list[AllowedRoot]:
    return [AllowedRoot(path=r) if isinstance(r, str) else r for r in allowlist.allowedRoots]


class MountPolicy:
    def __init__(self, settings: Settings, audit: Audit) -> None:
        self.settings = settings
        self.audit = audit
        self.path = settings.config_dir / ALLOWLIST_FILE

    async def allowlist(self) -> MountAllowlist:
        """The stored allowlist as it was sent, and the built-in patterns in their own field."""
        stored = await trio.to_thread.run_sync(self._read)
        return MountAllowlist(allowedRoots=stored.allowedRoots, blockedPatterns=stored.blockedPatterns,
                              builtInBlockedPatterns=list(DEFAULT_BLOCKED))

    def _read(self) -> MountAllowlist:
        try:
            return MountAllowlist.model_validate_json(self.path.read_bytes())
        except FileNotFoundError:
            return MountAllowlist()
        except (ValidationError, OSError) as exc:
            # A hand-edited file that no longer parses: say which file, refuse every mount.
            raise Unavailable(f"the mount allowlist {self.path} cannot be read: {exc}") from None

    async def set_allowlist(self, allowlist: MountAllowlist) -> MountAllowlist:
        for pattern in allowlist.blockedPatterns:
            if not pattern.strip() or "/" in pattern or _has_control(pattern):
                raise Invalid(f"blocked pattern {pattern!r} must be a non-empty path component")
        for root in _roots(allowlist):
            if _has_control(root.path) or not os.path.isabs(os.path.expanduser(root.path)):
                raise Invalid(f"allowed root {root.path!r} must be an absolute path")
        data = json.dumps(allowlist.model_dump(mode="json", exclude={"builtInBlockedPatterns"}), indent=2).encode()
        await trio.to_thread.run_sync(write_atomic, self.path, data)
        await self.audit.record("info", "config", "mount allowlist updated",
                                details={"allowedRoots": len(allowlist.allowedRoots),
                                         "blockedPatterns": len(allowlist.blockedPatterns)})
        return await self.allowlist()

    async def refuse_any(self, requests: list[MountRequest], *, group: str) -> None:
        """Raise one Invalid (MOUNT_REFUSED) naming every mount of requests this policy refuses."""
        refused = []
        for mount in requests:
            decision = await self.validate(mount, group=group)
            if not decision.allowed:
                refused.append({"hostPath": mount.hostPath, "message": decision.message})
        if refused:
            raise Invalid("containerConfig.additionalMounts has refused mounts", details=refused,
                          code="MOUNT_REFUSED")

    async def validate(self, request: MountRequest, *, group: str | None = None,
                       severity: str = "violation") -> MountDecision:
        """Decide on one mount; a refusal is audited at severity (a dry run passes "info")."""
        try:
            allowlist = await self.allowlist()
        except Unavailable as exc:
            decision = MountDecision(allowed=False, message=exc.message)
        else:
            decision = await trio.to_thread.run_sync(self._decide, request, allowlist)
        if not decision.allowed:
            await self.audit.record(
                severity, "mount", f"mount refused: {decision.message}", group=group,
                details={"hostPath": request.hostPath, "containerPath": request.containerPath},
            )
        return decision

    def _decide(self, request: MountRequest, allowlist: MountAllowlist) -> MountDecision:
        container, problem = container_path(request.containerPath)
        if problem:
            return MountDecision(allowed=False, message=problem)
        if _has_control(request.hostPath):
            return MountDecision(allowed=False, containerPath=container,
                                 message="hostPath contains control characters")
        if "." in request.hostPath.split("/"):
            return MountDecision(allowed=False, containerPath=container,
                                 message="hostPath must not contain '.' segments")
        given = Path(os.path.expanduser(request.hostPath))
        if not given.is_absolute():
            return MountDecision(allowed=False, containerPath=container,
                                 message="hostPath must be absolute (or start with ~)")
        try:
            canonical = given.resolve(strict=True)
        except (FileNotFoundError, NotADirectoryError):
            return MountDecision(allowed=False, containerPath=container,
                                 message=f"hostPath {request.hostPath} does not exist")
        except OSError as exc:
            return MountDecision(allowed=False, containerPath=container,
                                 message=f"hostPath cannot be resolved: {exc.strerror or exc}")
        except RuntimeError:  # what Path.resolve raises for a symbolic link loop
            return MountDecision(allowed=False, containerPath=container,
                                 message="hostPath cannot be resolved: a loop of symbolic links")

        def refused(message: str) -> MountDecision:
            return MountDecision(canonicalHostPath=str(canonical), containerPath=container, allowed=False,
                                 message=message)

        for path in (given, canonical):
            for part in path.parts:
                for pattern in (*DEFAULT_BLOCKED, *allowlist.blockedPatterns):
                    if part == pattern or pattern in part:
                        return refused(f"path component {part!r} matches blocked pattern {pattern!r}")
        for private in (self.settings.config_dir, self.settings.data_dir):
            private = private.resolve()
            if canonical.is_relative_to(private) or private.is_relative_to(canonical):
                return refused(f"the server's own folder {private} is never mounted")
        root = None
        for candidate in _roots(allowlist):
            try:
                resolved = Path(os.path.expanduser(candidate.path)).resolve(strict=True)
            except (OSError, ValueError, RuntimeError):
                continue  # a root that does not exist (or cannot) allows nothing
            if canonical.is_relative_to(resolved):
                root = candidate
                break
        if root is None:
            return refused("hostPath is not under any allowed root")
        read_only = request.readOnly or not root.allowReadWrite
        if not request.readOnly and read_only:
            return refused(f"read-write was asked for but allowed root {root.path} is read-only")
        return MountDecision(
            allowed=True, canonicalHostPath=str(canonical), containerPath=container,
            readOnly=read_only, message=f"Mount validated successfully (allowed root {root.path})",
        )


def _has_control(text: str) -> bool:
    return any(ord(c) < 32 or ord(c) == 127 for c in text)


def container_path(raw: str) -> tuple[str | None, str | None]:
    """(absolute container path, None) or (None, reason it is refused)."""
    if ":" in raw or "," in raw:
        return None, "containerPath must not contain ':' or ','"
    if any(c in raw for c in "\0\n\r"):
        return None, "containerPath contains control characters"
    path = PurePosixPath(raw)
    if path.is_absolute():
        # The spec's examples give the final path; accept it when it is under the extra root.
        if not path.is_relative_to(CONTAINER_ROOT) or path == CONTAINER_ROOT:
            return None, f"an absolute containerPath must be under {CONTAINER_ROOT}/"
        path = path.relative_to(CONTAINER_ROOT)
    parts = [p for p in raw.split("/") if p]
    if ".." in parts or not str(path).strip() or str(path) == ".":
        return None, "containerPath must be a non-empty relative path without '..'"
    if "." in parts:  # PurePosixPath drops them, so look at the raw segments
        return None, "containerPath must not contain '.' segments"
    return str(CONTAINER_ROOT / path), None
