"""Commands and queries about users: check the permission, load the stream, decide, append.

Every command takes the acting `Actor` and the client address; both go into the event's metadata, and
the ledger adds the time, so each admin change says who, what, when and from where. A user of another
tenant is "unknown" here, exactly like one that does not exist.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import orjson
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import select

from application.ports import Ledger
from domain import users
from domain.ledger import ConcurrencyError, NewEvent, Receipt
from domain.rbac import Actor, PermissionDenied
from domain.users import Invitation, User

MAX_USERS = 5000  # one page of the users query; a tenant with more needs pagination (not built)


class UserService:
    def __init__(self, ledger: Ledger, passwords: Any, hasher: PasswordHasher | None = None) -> None:
        self._ledger = ledger
        self._passwords = passwords
        # argon2id with the library's RFC 9106 "low memory" profile (64 MiB, 3 passes): the machine is small.
        self.hasher = hasher or PasswordHasher()

    # --- state ---------------------------------------------------------------------------------------

    def state(self, user_id: str) -> User | None:
        return users.fold(self._events(user_id))

    def _events(self, user_id: str) -> list[tuple[str, dict[str, Any]]]:
        return [(e.type, orjson.loads(e.payload)) for e in self._ledger.read_stream(users.user_stream(user_id))]

    def _own(self, actor: Actor, user_id: str) -> User:
        state = self.state(user_id)
        if state is None or state.tenant_id != actor.tenant_id:
            raise users.UnknownUser(user_id)
        return state

    def _append(self, state_version: int, tenant_id: str, user_id: str, decided: tuple[str, dict[str, Any]],
                actor: str, address: str) -> Receipt:
        event_type, payload = decided
        stream = users.user_stream(user_id)
        event = NewEvent(stream, event_type, payload, tenant_id=tenant_id,
                         metadata={"actor": actor, "client_address": address})
        [receipt] = self._ledger.append([event], {stream: state_version})
        return receipt

    # --- commands ------------------------------------------------------------------------------------

    def invite(self, actor: Actor, email: str, role: str, address: str,
               now: dt.datetime | None = None) -> tuple[Invitation, Receipt]:
        """A new user holding `role`; the invitation token is returned here once and never stored."""
        actor.require("users.write")
        if role == "owner":
            actor.require("owners.write")
        user_id = users.user_id_for(actor.tenant_id, email)
        invitation = users.new_invitation(user_id)
        decided = users.decide_invite(self.state(user_id), actor.tenant_id, email, role, actor.subject, invitation,
                                      now or dt.datetime.now(dt.UTC))
        try:
            receipt = self._append(0, actor.tenant_id, user_id, decided, actor.subject, address)
        except ConcurrencyError:
            raise users.UserAlreadyInvited(users.normalize_email(email)) from None
        return invitation, receipt

    def provision(self, tenant_id: str, email: str, role: str, provider_id: str, address: str) -> User:
        """A user created at its first single sign-on (actor `sso:<provider>`); if a concurrent first
        sign-in of the same person won the race, that user."""
        user_id = users.user_id_for(tenant_id, email)
        decided = users.decide_provision(self.state(user_id), tenant_id, email, role, provider_id)
        try:
            self._append(0, tenant_id, user_id, decided, f"sso:{provider_id}", address)
        except ConcurrencyError:
            pass
        state = self.state(user_id)
        assert state is not None  # appended by us or by the winner of the race
        return state

    def accept_invitation(self, token: str, password: str, address: str, now: dt.datetime | None = None) -> Receipt:
        """Set the first password with an invitation token, which is spent by this."""
        parsed = users.parse_invitation(token)
        if parsed is None:
            raise users.InvalidInvitation("malformed")
        user_id, secret = parsed
        state = users.check_invitation(self.state(user_id), secret, now or dt.datetime.now(dt.UTC))
        decided = users.decide_password_change(state, user_id, password, "invite")
        password_hash = self.hasher.hash(password)
        try:  # the ledger decides which of two concurrent uses of one token wins; only the winner stores its hash
            receipt = self._append(state.version, state.tenant_id, user_id, decided, f"user:{user_id}", address)
        except ConcurrencyError:
            raise users.InvalidInvitation("unknown or already used") from None
        self._passwords.set_password_hash(state.tenant_id, user_id, password_hash)
        return receipt

    def change_password(self, actor: Actor, current_password: str, new_password: str, address: str) -> Receipt:
        """The signed-in user changes its own password, proving it knows the current one."""
        if not actor.subject.startswith("user:"):
            raise PermissionDenied("a signed-in user (not an API key)", actor.tenant_id)
        user_id = actor.subject.removeprefix("user:")
        state = self._own(actor, user_id)
        stored = self._passwords.password_hash(user_id)
        try:
            ok = stored is not None and self.hasher.verify(stored, current_password or "")
        except (VerificationError, InvalidHashError):
            ok = False
        if not ok:
            raise users.InvalidPassword()
        decided = users.decide_password_change(state, user_id, new_password, "self")
        receipt = self._append(state.version, state.tenant_id, user_id, decided, actor.subject, address)
        self._passwords.set_password_hash(state.tenant_id, user_id, self.hasher.hash(new_password))
        return receipt

    def grant_role(self, actor: Actor, user_id: str, role: str, address: str) -> Receipt:
        actor.require("users.write")
        if role == "owner":
            actor.require("owners.write")
        state = self._own(actor, user_id)
        return self._append(state.version, actor.tenant_id, user_id, users.decide_grant(state, user_id, role),
                            actor.subject, address)

    def revoke_role(self, actor: Actor, user_id: str, role: str, address: str) -> Receipt:
        actor.require("users.write")
        if role == "owner":
            actor.require("owners.write")
        state = self._own(actor, user_id)
        return self._append(state.version, actor.tenant_id, user_id, users.decide_revoke(state, user_id, role),
                            actor.subject, address)

    def deactivate(self, actor: Actor, user_id: str, reason: str, address: str) -> Receipt:
        actor.require("users.write")
        state = self._own(actor, user_id)
        if "owner" in state.roles:
            actor.require("owners.write")
        return self._append(state.version, actor.tenant_id, user_id, users.decide_deactivate(state, user_id, reason),
                            actor.subject, address)

    # --- queries -------------------------------------------------------------------------------------

    def list(self, actor: Actor, projections: Any) -> list[User]:
        """The tenant's users, from the audit index (streams `user-*` of this tenant); never a hash."""
        actor.require("users.read")
        from projections import audit_index

        t = audit_index.entries
        with projections.reading("audit_index") as conn:
            streams = conn.execute(
                select(t.c.stream_id).where(t.c.tenant_id == actor.tenant_id, t.c.stream_id.like("user-%"),
                                            t.c.stream_version == 1)
                .order_by(t.c.position).limit(MAX_USERS)
            ).scalars().all()
        found = [self.state(s.removeprefix("user-")) for s in streams]
        return [u for u in found if u is not None and u.tenant_id == actor.tenant_id]
