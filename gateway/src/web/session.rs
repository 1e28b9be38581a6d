//! Server-side state of the approval page: sign-ins in progress and signed-in sessions.
//!
//! The browser holds only random ids: `__Host-gw_login` (a sign-in in progress: `SameSite=Lax`,
//! since the identity provider's redirect back is a cross-site navigation) and
//! `__Host-gw_session` (`Secure; HttpOnly; SameSite=Strict; Path=/`). A session lives as long
//! as the ID token it was made from and ends at sign-out. Both maps are bounded: the oldest
//! entry goes first.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use crate::hold::Principal;

pub const LOGIN_COOKIE: &str = "__Host-gw_login";
pub const SESSION_COOKIE: &str = "__Host-gw_session";

/// A sign-in waits this long for the identity provider's answer.
pub const LOGIN_TTL: Duration = Duration::from_secs(600);
const MAX_LOGINS: usize = 1024;
const MAX_SESSIONS: usize = 4096;

/// A sign-in in progress.
#[derive(Clone)]
pub struct Login {
    pub state: String,
    pub nonce: String,
    pub verifier: String,
    pub until: Instant,
}

/// A signed-in approver.
#[derive(Clone)]
pub struct Session {
    pub principal: Principal,
    /// The per-session anti-CSRF token every form carries.
    pub csrf: String,
    pub until: Instant,
    /// What the last decision did, shown once on the next page.
    pub notice: Option<String>,
}

#[derive(Default)]
pub struct Store {
    logins: Mutex<HashMap<String, Login>>,
    sessions: Mutex<HashMap<String, Session>>,
}

fn prune<V>(map: &mut HashMap<String, V>, max: usize, until: impl Fn(&V) -> Instant) {
    let now = Instant::now();
    map.retain(|_, v| until(v) > now);
    while map.len() >= max {
        let Some(oldest) = map
            .iter()
            .min_by_key(|(_, v)| until(v))
            .map(|(k, _)| k.clone())
        else {
            break;
        };
        map.remove(&oldest);
    }
}

impl Store {
    /// Start a sign-in; the returned id goes in the login cookie.
    pub fn begin(&self, login: Login) -> String {
        let id = super::signin::random_token();
        let mut m = self.logins.lock().unwrap_or_else(|p| p.into_inner());
        prune(&mut m, MAX_LOGINS, |l| l.until);
        m.insert(id.clone(), login);
        id
    }

    /// The sign-in of this browser (its login cookie), taken: a code is redeemed once.
    pub fn take_login(&self, id: &str) -> Option<Login> {
        let l = self
            .logins
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id)?;
        (l.until > Instant::now()).then_some(l)
    }

    /// A new session; its id goes in the session cookie.
    pub fn open(&self, principal: Principal, ttl: Duration) -> (String, Session) {
        let id = super::signin::random_token();
        let s = Session {
            principal,
            csrf: super::signin::random_token(),
            until: Instant::now() + ttl,
            notice: None,
        };
        let mut m = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        prune(&mut m, MAX_SESSIONS, |s| s.until);
        m.insert(id.clone(), s.clone());
        (id, s)
    }

    pub fn get(&self, id: &str) -> Option<Session> {
        let m = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        m.get(id).filter(|s| s.until > Instant::now()).cloned()
    }

    /// The session's notice, taken (shown once).
    pub fn take_notice(&self, id: &str) -> Option<String> {
        let mut m = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        m.get_mut(id).and_then(|s| s.notice.take())
    }

    pub fn set_notice(&self, id: &str, notice: String) {
        let mut m = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = m.get_mut(id) {
            s.notice = Some(notice);
        }
    }

    pub fn close(&self, id: &str) -> Option<Session> {
        self.sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id)
    }
}

/// The value of cookie `name` in a request's Cookie headers.
pub fn cookie(headers: &http::HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

/// Compare secrets without leaking where they differ.
pub fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alice() -> Principal {
        Principal::Oidc {
            issuer: "https://idp".into(),
            subject: "alice".into(),
            name: None,
            email: Some("alice@example.com".into()),
            username: Some("alice".into()),
            groups: vec![],
            expires: 0,
        }
    }

    #[test]
    fn a_login_is_taken_once_and_expires() {
        let s = Store::default();
        let l = Login {
            state: "st".into(),
            nonce: "n".into(),
            verifier: "v".into(),
            until: Instant::now() + LOGIN_TTL,
        };
        let id = s.begin(l.clone());
        assert_eq!(s.take_login(&id).unwrap().state, "st");
        assert!(s.take_login(&id).is_none(), "a code is redeemed once");
        let old = s.begin(Login {
            until: Instant::now() - Duration::from_secs(1),
            ..l
        });
        assert!(s.take_login(&old).is_none());
    }

    #[test]
    fn sessions_have_their_own_csrf_token_and_end_at_close_or_expiry() {
        let s = Store::default();
        let (a, sa) = s.open(alice(), Duration::from_secs(60));
        let (b, sb) = s.open(alice(), Duration::from_secs(60));
        assert_ne!(a, b);
        assert_ne!(sa.csrf, sb.csrf);
        assert!(s.get(&a).is_some());
        s.close(&a);
        assert!(s.get(&a).is_none());
        let (c, _) = s.open(alice(), Duration::ZERO);
        assert!(s.get(&c).is_none(), "expired with its token");
    }

    #[test]
    fn cookies_are_found_by_exact_name() {
        let mut h = http::HeaderMap::new();
        h.insert(
            http::header::COOKIE,
            "x__Host-gw_session=evil; __Host-gw_session=good; other=1"
                .parse()
                .unwrap(),
        );
        assert_eq!(cookie(&h, SESSION_COOKIE).as_deref(), Some("good"));
        assert!(same("abc", "abc") && !same("abc", "abd") && !same("abc", "ab"));
    }
}
