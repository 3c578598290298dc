//! One room, two protocols: XEP-0045 rooms and 1:1 chats as views of Matrix rooms, driven by
//! real clients (matrix-nio and slixmpp in one script each). On SQLite and PostgreSQL.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use estuary_tests::{Backend, both_backends, interop_script};

/// Run a cross-protocol script against a server with alice, bob and carol; the steps must be
/// in its output.
async fn cross_protocol(backend: Backend, script: &str, steps: &[&str]) {
    let (inst, server) = estuary_tests::xmpp_server(backend, "", &["alice", "bob", "carol"]).await;
    let port = inst.c2s_port.to_string();
    let out = interop_script(
        script,
        &["--homeserver", &server.base_url, "--port", &port],
        Duration::from_secs(180),
    )
    .await;
    for step in steps {
        assert!(out.contains(step), "{step}:\n{out}");
    }
    assert!(!server.logs().contains("panicked"), "{}", server.logs());
    assert!(server.terminate().await.success());
}

async fn muc_cross_protocol(backend: Backend) {
    cross_protocol(
        backend,
        "muc_cross.py",
        &[
            "the join sequence",
            "MAM pages through the room's messages",
            "a kick by nick from XMPP (307)",
            "Matrix typing is a chat state 'composing' from the occupant",
            "an XMPP displayed marker is bob's Matrix read receipt",
            "bob leaving over XMPP leaves the Matrix room",
        ],
    )
    .await;
}

both_backends!(muc_cross_protocol);

async fn dm_cross_protocol(backend: Backend) {
    cross_protocol(
        backend,
        "dm_cross.py",
        &[
            "the first message made a DM room, in bob's m.direct",
            "alice's reaction to bob's message names it by bob's own id",
            "alice's read receipt is a XEP-0333 displayed marker of bob's own id",
            "bob's displayed marker is his Matrix read receipt",
            "bob's archive with alice, without what was retracted",
            "carol's archive gives the OMEMO element back to her XMPP clients",
        ],
    )
    .await;
}

both_backends!(dm_cross_protocol);

async fn presence_cross_protocol(backend: Backend) {
    cross_protocol(
        backend,
        "presence_cross.py",
        &[
            "away with a status is unavailable with that status_msg",
            "carol's Matrix presence reaches bob from her bare JID, with her status",
            "Matrix offline is unavailable",
            "bob's new session gets carol's Matrix presence on login",
            "carol's XMPP session coming back withdraws her bare-JID presence",
        ],
    )
    .await;
}

both_backends!(presence_cross_protocol);

async fn muc_rooms(backend: Backend) {
    cross_protocol(
        backend,
        "muc_rooms.py",
        &[
            "a locked room is item-not-found to others",
            "a reserved room opens once its form is submitted: bob joins",
            "an instant room (an empty form) is open",
            "and frees its name",
            "a visitor's message is refused",
            "the moderator list",
            "an admin's moderator role cannot be revoked (not-allowed)",
            "bob's private message reaches carol",
            "a private message to a Matrix member is a DM invitation from bob",
            "bob's next session gets the invitation (XEP-0249)",
            "declining (§7.8.2) rejects the Matrix invitation",
        ],
    )
    .await;
}

both_backends!(muc_rooms);
