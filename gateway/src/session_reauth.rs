//! Re-authentication on a live connection (MQTT 5 §4.12.1), sans-IO.
//!
//! ```text
//! client AUTH 0x19 (method, data) ──▶ exchange.step ──▶ AUTH 0x18 (data) ──▶ client
//! client AUTH 0x18 (data)         ──▶ exchange.step ──▶ AUTH 0x00 (data)       done
//!                                                   └─▶ DISCONNECT 0x87        failed
//! ```
//!
//! Other packets keep flowing while the exchange runs. The new identity
//! must belong to the session's app: a session never changes tenant.

use super::{Action, Close, Session};
use crate::auth::{AuthExchange, AuthStep, Authenticator, auth_packet};
use herald_core::{ByteString, ReasonCode};
use herald_mqtt::{Auth, Packet};

/// The method a session authenticated with, and the exchange of a
/// re-authentication in progress.
pub(super) struct ReAuth {
    method: ByteString,
    exchange: Option<Box<dyn AuthExchange>>,
}

impl std::fmt::Debug for ReAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReAuth")
            .field("method", &self.method)
            .field("in_progress", &self.exchange.is_some())
            .finish()
    }
}

impl ReAuth {
    pub(super) fn new(method: ByteString) -> ReAuth {
        ReAuth { method, exchange: None }
    }
}

impl Session {
    /// Handles an AUTH packet from the client: starts or continues a
    /// re-authentication with `authenticator`.
    pub fn on_auth(&mut self, auth: Auth, authenticator: &dyn Authenticator, out: &mut Vec<Action>) {
        let app = self.key.app.clone();
        let Some(state) = self.auth.as_deref_mut() else {
            return out.push(Action::Close(Close::error(
                ReasonCode::ProtocolError,
                "[MQTT-4.12.0-7] AUTH without an authentication method in CONNECT",
            )));
        };
        if auth.properties.authentication_method() != Some(&*state.method) {
            return out.push(Action::Close(Close::error(
                ReasonCode::ProtocolError,
                "[MQTT-4.12.1-1] re-authentication must use the method of CONNECT",
            )));
        }
        let data = auth.properties.authentication_data().map(|d| &d[..]);
        let step = match (auth.reason_code, state.exchange.as_mut()) {
            (ReasonCode::ReAuthenticate, None) => match authenticator.begin(&state.method) {
                Some(exchange) => state.exchange.insert(exchange).step(data),
                None => return out.push(Action::Close(failed())),
            },
            (ReasonCode::ContinueAuthentication, Some(exchange)) => exchange.step(data),
            (ReasonCode::ReAuthenticate, Some(_)) => {
                return out.push(Action::Close(Close::error(
                    ReasonCode::ProtocolError,
                    "[MQTT-4.12.1-1] re-authentication already in progress",
                )));
            }
            _ => {
                return out.push(Action::Close(Close::error(
                    ReasonCode::ProtocolError,
                    "[MQTT-4.12.0-3] AUTH 0x18 only answers the server's AUTH",
                )));
            }
        };
        match step {
            Ok(AuthStep::Continue(reply)) => {
                let auth = auth_packet(ReasonCode::ContinueAuthentication, state.method.clone(), Some(reply));
                out.push(Action::Send(Packet::Auth(auth)));
            }
            Ok(AuthStep::Done { principal, data }) => {
                state.exchange = None;
                if principal.app != app {
                    return out.push(Action::Close(Close::error(
                        ReasonCode::NotAuthorized,
                        "re-authenticated as a user of another app",
                    )));
                }
                out.push(Action::Send(Packet::Auth(auth_packet(
                    ReasonCode::Success,
                    state.method.clone(),
                    data,
                ))));
            }
            Err(_) => {
                state.exchange = None;
                out.push(Action::Close(failed()));
            }
        }
    }
}

/// [MQTT-4.12.1-2]: a failed re-authentication ends the connection.
fn failed() -> Close {
    Close::error(ReasonCode::NotAuthorized, "re-authentication failed")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::{ConfigAuthenticator, ConfiguredUser, Principal, Secret};
    use crate::handshake::{Identity, accept};
    use crate::scram;
    use crate::session::SessionLimits;
    use bytes::Bytes;
    use herald_core::{AppId, Epoch, MessageId, UnixMillis};
    use herald_mqtt::{Connect, ProtocolVersion};
    use std::sync::Arc;

    fn app(name: &str) -> AppId {
        AppId::new(name).expect("valid")
    }

    /// Users alice (app shop) and mallory (app other), both with password "pw".
    fn authenticator() -> ConfigAuthenticator {
        let user = |name: &str| ConfiguredUser::new(Secret::Password("pw".into()), app(name));
        ConfigAuthenticator::new(
            false,
            [("alice".into(), user("shop")), ("mallory".into(), user("other"))].into(),
        )
    }

    /// A session that authenticated as alice with `method` (none: a password).
    fn session(method: Option<&str>) -> Session {
        let connect = Connect::new(ProtocolVersion::V5, "dev-1");
        let anyone = ConfigAuthenticator::anonymous();
        let identity = match method {
            Some(method) => Identity::Proven {
                principal: Principal { app: app("shop"), username: Some("alice".into()), valid_until: None },
                method: ByteString::from(method),
                data: None,
            },
            None => Identity::Password(&anyone),
        };
        let limits = SessionLimits::default();
        let accepted = accept(&connect, &limits, identity, || "x".into(), MessageId(1), UnixMillis(1))
            .expect("accepted");
        Session::new(&accepted, Arc::new(limits), Epoch { generation: 1, counter: 1 }, 0)
    }

    fn auth(reason_code: ReasonCode, method: &str, data: &str) -> Auth {
        auth_packet(reason_code, ByteString::from(method), Some(Bytes::copy_from_slice(data.as_bytes())))
    }

    /// The AUTH the session sent, or the reason it closed with.
    fn outcome(out: &[Action]) -> Result<&Auth, ReasonCode> {
        match out {
            [Action::Send(Packet::Auth(auth))] => Ok(auth),
            [Action::Close(close)] => Err(close.reason),
            other => panic!("unexpected actions {other:?}"),
        }
    }

    /// Re-authenticates `session` as `name` with `password`; returns the
    /// session's last answer and the server-final message the client expects.
    fn reauthenticate(
        session: &mut Session,
        name: &str,
        password: &[u8],
    ) -> (Result<Auth, ReasonCode>, String) {
        let authenticator = authenticator();
        let client = scram::Client::new(name, &scram::new_nonce());
        let mut out = Vec::new();
        session.on_auth(
            auth(ReasonCode::ReAuthenticate, scram::METHOD, &client.first()),
            &authenticator,
            &mut out,
        );
        let first = outcome(&out).expect("the first step continues");
        assert_eq!(first.reason_code, ReasonCode::ContinueAuthentication);
        let server_first = first.properties.authentication_data().expect("server-first").clone();
        let (last, expected) = client.finish(&server_first, password).expect("valid server-first");
        let mut out = Vec::new();
        session.on_auth(
            auth(ReasonCode::ContinueAuthentication, scram::METHOD, &last),
            &authenticator,
            &mut out,
        );
        (outcome(&out).cloned(), expected)
    }

    #[test]
    fn a_successful_re_authentication_ends_with_auth_success_and_the_server_signature() {
        let mut session = session(Some(scram::METHOD));
        for _ in 0..2 {
            let (answer, expected) = reauthenticate(&mut session, "alice", b"pw");
            let answer = answer.expect("re-authenticated");
            assert_eq!(answer.reason_code, ReasonCode::Success);
            assert_eq!(answer.properties.authentication_method(), Some(scram::METHOD));
            assert_eq!(answer.properties.authentication_data().map(|d| &d[..]), Some(expected.as_bytes()));
        }
    }

    #[test]
    fn a_failed_re_authentication_closes_with_0x87() {
        let (answer, _) = reauthenticate(&mut session(Some(scram::METHOD)), "alice", b"wrong");
        assert_eq!(answer.map(|a| a.reason_code), Err(ReasonCode::NotAuthorized));
        // Valid credentials of a user of another app do not move the session there.
        let (answer, _) = reauthenticate(&mut session(Some(scram::METHOD)), "mallory", b"pw");
        assert_eq!(answer.map(|a| a.reason_code), Err(ReasonCode::NotAuthorized));
    }

    #[test]
    fn auth_out_of_turn_or_with_another_method_is_a_protocol_error() {
        let authenticator = authenticator();
        let cases = [
            (None, auth(ReasonCode::ReAuthenticate, scram::METHOD, "n,,n=alice,r=abc")),
            (Some(scram::METHOD), auth(ReasonCode::ReAuthenticate, "OTHER", "n,,n=alice,r=abc")),
            (Some(scram::METHOD), auth(ReasonCode::ContinueAuthentication, scram::METHOD, "c=biws")),
        ];
        for (method, packet) in cases {
            let mut out = Vec::new();
            session(method).on_auth(packet.clone(), &authenticator, &mut out);
            assert_eq!(
                outcome(&out).map(|a| a.reason_code),
                Err(ReasonCode::ProtocolError),
                "{method:?} {packet:?}"
            );
        }
        // A second 0x19 while the first exchange runs.
        let mut session = session(Some(scram::METHOD));
        let start = auth(ReasonCode::ReAuthenticate, scram::METHOD, "n,,n=alice,r=abc");
        let mut out = Vec::new();
        session.on_auth(start.clone(), &authenticator, &mut out);
        assert!(outcome(&out).is_ok(), "{out:?}");
        let mut out = Vec::new();
        session.on_auth(start, &authenticator, &mut out);
        assert_eq!(outcome(&out).map(|a| a.reason_code), Err(ReasonCode::ProtocolError));
    }
}
