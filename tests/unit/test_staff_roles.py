"""The room staff-list rule (``auth.effective_role``, ``auth.in_room``, ``auth.may_appoint``):
pure, no I/O. The one rule the web API and the gateway both apply."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from danmaku import auth

ENTRIES = st.sampled_from([None, *auth.STAFF_ENTRIES, "bogus", ""])
TOKEN_ROLES = st.sampled_from(auth.ROLES)


@pytest.mark.parametrize(
    ("token_role", "listed", "acts_as"),
    [
        ("viewer", None, "viewer"),
        ("viewer", "moderator", "moderator"),  # appointed: a plain token acts as staff
        ("viewer", "streamer", "streamer"),  # an admin's grant
        ("viewer", auth.REVOKED, "viewer"),
        ("moderator", None, "moderator"),
        ("moderator", auth.REVOKED, "viewer"),  # removed: the token's role no longer counts
        ("moderator", "moderator", "moderator"),
        ("moderator", "streamer", "streamer"),
        ("streamer", "moderator", "streamer"),  # a grant never lowers
        ("streamer", auth.REVOKED, "streamer"),  # platform-signed: not revocable by a room
        ("admin", auth.REVOKED, "admin"),
        ("admin", "moderator", "admin"),
        ("moderator", "bogus", "moderator"),  # an unknown entry counts as none
        ("nonsense", "moderator", "moderator"),  # an unknown token role as a viewer's
        ("nonsense", None, "viewer"),
    ],
)
def test_effective_role_examples(token_role: str, listed: str | None, acts_as: str) -> None:
    assert auth.effective_role(token_role, listed) == acts_as


@given(TOKEN_ROLES, ENTRIES)
def test_effective_role_is_the_token_role_except_for_a_grant_above_or_a_revocation(
    token_role: str, listed: str | None
) -> None:
    role = auth.effective_role(token_role, listed)
    assert role in auth.ROLES
    if listed == auth.REVOKED:
        assert role == (token_role if token_role in auth.IRREVOCABLE else "viewer")
    elif listed in auth.GRANTABLE:
        assert role == max(token_role, listed, key=auth.rank)
    else:
        assert role == token_role
    # Never above what the token or the list gives, never an admin from a list.
    assert auth.rank(role) <= max(auth.rank(token_role), auth.rank(listed or "viewer"))
    if token_role != "admin":
        assert role != "admin"


@given(TOKEN_ROLES, st.lists(ENTRIES, max_size=5))
def test_in_room_depends_only_on_the_token_and_the_latest_entry(
    token_role: str, history: list[str | None]
) -> None:
    """However many list changes a connection lived through, its role is what the token
    and the current entry say (a revocation after a grant, a grant after a revocation)."""
    token_user = auth.User(uid="u1", nick="n", role=token_role)
    user = token_user
    for listed in history:
        user = auth.in_room(user, listed)
        assert user.role == auth.effective_role(token_role, listed)
        assert (user.token_role or user.role) == token_role
        assert (user.uid, user.nick) == ("u1", "n")
    final = auth.in_room(user, None)
    assert final == token_user  # off the list: back to exactly the token's user


def test_in_room_returns_the_same_user_when_nothing_changes() -> None:
    user = auth.User(uid="u", nick="n", role="moderator")
    assert auth.in_room(user, None) is user
    assert auth.in_room(user, "moderator") is user
    granted = auth.in_room(auth.User(uid="u", nick="n"), "moderator")
    assert auth.in_room(granted, "moderator") is granted
    assert granted.is_staff and granted.public()["role"] == "moderator"


@pytest.mark.parametrize(
    ("actor", "role", "allowed"),
    [
        ("admin", "moderator", True),
        ("admin", "streamer", True),
        ("streamer", "moderator", True),
        ("streamer", "streamer", False),  # not at one's own rank
        ("moderator", "moderator", False),  # a moderator appoints nobody
        ("viewer", "moderator", False),
        ("admin", "admin", False),  # not a room role
        ("admin", auth.REVOKED, False),
    ],
)
def test_who_may_appoint(actor: str, role: str, allowed: bool) -> None:
    assert auth.may_appoint(actor, role) is allowed


@given(TOKEN_ROLES, st.sampled_from([*auth.GRANTABLE, "admin", "viewer"]))
def test_nobody_but_an_admin_grants_a_role_at_or_above_its_own(actor: str, role: str) -> None:
    if auth.may_appoint(actor, role):
        assert role in auth.GRANTABLE
        assert actor == "admin" or auth.rank(role) < auth.rank(actor)
        assert auth.rank(actor) >= auth.rank("streamer")
