"""What an API process does with a change notice: drop what it cached of the changed state.

Each API process keeps in memory what its hot path reads on every request (application/identity.py,
deployments.py, privacy.py). A change made elsewhere (another API process, the CLI) is announced when it
commits (application.ports.ChangeNotices), and this drops the copy here, so that the next request reads
it again: a revoked key is refused before any upstream call, an erased subject's key is not sealed with
again, a new recording mode or deployment holds at once. Without notices each copy would still be
dropped, but only when it expires. docs/architecture.md, "Change notices".

While notices flow, a copy need not expire either: it lasts until a notice drops it, and nothing is read
again in the background (`ExpiringLru.last_until_invalidated`). When they stop (the connection lost),
everything cached is dropped and copies expire after their TTL again, until notices resume.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from application.ports import ChangeListener, ChangeNotice
from domain.deployments import deployments_stream
from domain.identity import API_KEY_STREAM_PREFIX, tenant_stream

if TYPE_CHECKING:
    from application.deployments import DeploymentService
    from application.identity import IdentityService
    from application.privacy import PrivacyService

log = logging.getLogger(__name__)


class CacheInvalidation(ChangeListener):
    """Routes each notice to the cache that holds the changed state."""

    def __init__(self, identity: IdentityService, privacy: PrivacyService,
                 deployments: DeploymentService | None = None) -> None:
        self._identity = identity
        self._privacy = privacy
        self._deployments = deployments
        self.applied = 0  # notices applied, and times everything was forgotten: for tests and metrics
        self.gaps = 0
        self.listening = False

    def resumed(self) -> None:
        self.forget_everything()
        self._last_until_invalidated(True)
        self.listening = True

    def interrupted(self) -> None:
        self.listening = False
        self._last_until_invalidated(False)
        self.forget_everything()

    def _last_until_invalidated(self, lasting: bool) -> None:
        self._identity.last_until_invalidated(lasting)
        self._privacy.last_until_invalidated(lasting)
        if self._deployments is not None:
            self._deployments.last_until_invalidated(lasting)

    def changed(self, notice: ChangeNotice) -> None:
        try:
            self._apply(notice)
        except Exception:  # never lose the follower over one notice: forget everything instead
            log.exception("could not apply %s; forgetting every cached copy", notice)
            self.forget_everything()
        self.applied += 1

    def _apply(self, notice: ChangeNotice) -> None:
        tenant, stream = notice.tenant_id, notice.stream_id
        if notice.subject_id is not None:
            self._privacy.forget_key(tenant, notice.subject_id)
        elif stream is None:
            return
        elif stream.startswith(API_KEY_STREAM_PREFIX):
            self._identity.forget_key(stream.removeprefix(API_KEY_STREAM_PREFIX))
        elif stream == tenant_stream(tenant):
            self._privacy.forget_switch(tenant)
        elif stream == deployments_stream(tenant) and self._deployments is not None:
            self._deployments.invalidate(tenant)

    def forget_everything(self) -> None:
        """Notices may have been missed: whatever is cached is read again when next needed."""
        self.gaps += 1
        self._identity.forget_everything()
        self._privacy.forget_everything()
        if self._deployments is not None:
            self._deployments.forget_everything()
