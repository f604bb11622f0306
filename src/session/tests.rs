//! `Session` driven with `Request`s, its answers read as `Reply`s from the client's queue:
//! no socket, no wire form.

use std::sync::Arc;

use tokio_util::task::TaskTracker;

use super::*;
use crate::event::Transport;
use crate::hub::{HubConfig, queue::Receiver};

fn hub() -> Arc<Hub> {
    Hub::new(HubConfig {
        auth: crate::auth::Auth::open(),
        ..HubConfig::default()
    })
}

/// A client of `dialect`, in no room yet, its welcome (if any) read.
fn client(hub: &Arc<Hub>, dialect: Dialect, nick: &str) -> (Session, Receiver<Delivery>) {
    let hello = Hello {
        transport: Transport::Ws,
        dialect,
        addr: None,
        nick: Some(nick),
        principal: Principal::Anonymous,
    };
    let (session, mut rx) = Session::connect(hub, TaskTracker::new(), hello, "");
    replies(&mut rx);
    (session, rx)
}

/// The replies queued so far, room events left out.
fn replies(rx: &mut Receiver<Delivery>) -> Vec<Reply> {
    std::iter::from_fn(|| rx.try_recv())
        .filter_map(|d| match d {
            Delivery::Reply(reply) => Some(*reply),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn a_chat_client_is_greeted_then_joined() {
    let hub = hub();
    let addr = "127.0.0.1:9".parse().unwrap();
    let (session, mut rx) = Session::start_chat(&hub, Transport::Tcp, addr, TaskTracker::new());
    let said = replies(&mut rx);
    assert_eq!(
        said,
        [Reply::Greeting {
            nick: Arc::clone(session.nick()),
            room: Some(DEFAULT_ROOM.into()),
        }]
    );
    assert_eq!(&**session.rooms()[0].name(), DEFAULT_ROOM);
}

#[tokio::test]
async fn a_structured_client_is_welcomed_then_told_each_join() {
    let hub = hub();
    let hello = Hello {
        transport: Transport::Grpc,
        dialect: Dialect::Structured,
        addr: None,
        nick: Some("ann"),
        principal: Principal::Anonymous,
    };
    let (mut ann, mut rx) = Session::connect(&hub, TaskTracker::new(), hello, "a");
    let cursor = ann.enter("a", None).unwrap();
    ann.enter("b", None).unwrap();
    let said = replies(&mut rx);
    assert_eq!(
        said[..2],
        [
            Reply::Welcome {
                nick: "ann".into(),
                user: None,
                room: "a".into()
            },
            Reply::Joined {
                reference: None,
                room: "a".into(),
                members: vec!["ann".into()],
                cursor,
            },
        ]
    );
    assert!(matches!(&said[2], Reply::Joined { room, .. } if &**room == "b"));
}

#[tokio::test]
async fn renames_answer_with_the_new_name_or_say_it_is_the_same() {
    let hub = hub();
    let (mut ann, mut rx) = client(&hub, Dialect::Lines, "ann");
    ann.apply(Request::Nick("anna"));
    ann.apply(Request::Nick("anna"));
    assert_eq!(
        replies(&mut rx),
        [
            Reply::Renamed("anna".into()),
            Reply::SameNick("anna".into())
        ]
    );
}

#[tokio::test]
async fn a_publish_outside_any_room_is_refused_with_its_ref() {
    let hub = hub();
    let (mut ann, mut rx) = client(&hub, Dialect::Structured, "ann");
    ann.apply(Request::Publish {
        room: None,
        text: "hi",
        key: None,
        reference: Some("r1"),
    });
    let said = replies(&mut rx);
    let [
        Reply::Refused {
            reference, code, ..
        },
    ] = &said[..]
    else {
        panic!("{said:?}");
    };
    assert_eq!(
        (reference.as_deref(), *code),
        (Some("r1"), ErrorCode::NotJoined)
    );
}

#[tokio::test]
async fn a_structured_publish_is_acked_with_its_id_once_durable() {
    let hub = hub();
    let (mut ann, mut rx) = client(&hub, Dialect::Structured, "ann");
    ann.apply(Request::Join {
        room: "dev",
        since: None,
        reference: Some("j"),
    });
    ann.apply(Request::Publish {
        room: Some("dev"),
        text: "hi",
        key: None,
        reference: Some("p"),
    });
    ann.tasks.close();
    ann.tasks.wait().await;
    let said = replies(&mut rx);
    assert!(
        matches!(&said[0], Reply::Joined { reference: Some(r), room, members, .. }
            if &**r == "j" && &**room == "dev" && members.len() == 1),
        "{said:?}"
    );
    assert!(
        matches!(&said[1], Reply::Ack { reference: Some(r), room, duplicate: false, .. }
            if &**r == "p" && &**room == "dev"),
        "{said:?}"
    );
}

#[tokio::test]
async fn who_lists_members_and_their_transports() {
    let hub = hub();
    let (mut ann, mut rx) = client(&hub, Dialect::Plain, "ann");
    ann.apply(Request::Move("dev"));
    ann.apply(Request::Who);
    let said = replies(&mut rx);
    assert_eq!(
        said,
        [
            Reply::Moved {
                room: "dev".into(),
                count: 1
            },
            Reply::Who {
                room: "dev".into(),
                members: vec![("ann".into(), Transport::Ws)],
            },
        ]
    );
}

#[tokio::test]
async fn a_direct_message_to_nobody_is_refused_and_to_someone_is_sent() {
    let hub = hub();
    let (mut ann, mut rx) = client(&hub, Dialect::Lines, "ann");
    let (_bob, _bob_rx) = client(&hub, Dialect::Lines, "bob");
    ann.apply(Request::Direct {
        to: "carol",
        text: "psst",
        reference: None,
    });
    ann.apply(Request::Direct {
        to: "bob",
        text: "psst",
        reference: None,
    });
    let said = replies(&mut rx);
    assert!(matches!(
        &said[0],
        Reply::Refused {
            code: ErrorCode::NoSuchUser,
            ..
        }
    ));
    assert_eq!(
        said[1],
        Reply::Sent {
            reference: None,
            to: "bob".into(),
            text: "psst".into(),
        }
    );
}

#[tokio::test]
async fn a_quiet_client_is_answered_by_its_transport_not_its_session() {
    let hub = hub();
    let (mut sse, mut rx) = client(&hub, Dialect::Quiet, "ann");
    sse.apply(Request::Help);
    sse.apply(Request::Leave {
        room: "dev",
        reference: None,
    });
    assert_eq!(replies(&mut rx), []);
}
