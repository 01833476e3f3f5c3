//! What one replica tells the others when a record changes, and the two
//! sides of telling it: publishing ([`Publish`]) and applying ([`Apply`]).

use async_trait::async_trait;

/// What changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    Key(String),
    User(String),
    Group(String),
    Token { jti: String, expires_at: i64 },
}

impl Change {
    /// The form published to other replicas.
    pub fn encode(&self) -> String {
        match self {
            Change::Key(id) => format!("key:{id}"),
            Change::User(id) => format!("user:{id}"),
            Change::Group(name) => format!("group:{name}"),
            Change::Token { jti, expires_at } => format!("jti:{expires_at}:{jti}"),
        }
    }

    /// A published change; `None` for anything else.
    pub fn decode(s: &str) -> Option<Change> {
        let (kind, rest) = s.split_once(':')?;
        Some(match kind {
            "key" => Change::Key(rest.to_owned()),
            "user" => Change::User(rest.to_owned()),
            "group" => Change::Group(rest.to_owned()),
            "jti" => {
                let (exp, jti) = rest.split_once(':')?;
                Change::Token { jti: jti.to_owned(), expires_at: exp.parse().ok()? }
            }
            _ => return None,
        })
    }
}

/// Applies a change to this replica's caches.
pub trait Apply: Send + Sync + 'static {
    fn apply(&self, change: &Change) -> impl std::future::Future<Output = ()> + Send;
    /// After (re)subscribing, when messages may have been missed.
    fn reset(&self) -> impl std::future::Future<Output = ()> + Send;
}

/// Tells the other replicas about a change (best effort: on failure they
/// catch up through TTLs and polling).
#[async_trait]
pub trait Publish: Send + Sync + 'static {
    async fn publish(&self, change: &Change);
}

/// For a single replica: nothing to tell.
pub struct Nowhere;

#[async_trait]
impl Publish for Nowhere {
    async fn publish(&self, _: &Change) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_round_trip() {
        for c in [
            Change::Key("0123456789abcdef".into()),
            Change::User("u-1".into()),
            Change::Group("team:a".into()),
            Change::Token { jti: "a:b".into(), expires_at: 1700000000 },
        ] {
            assert_eq!(Change::decode(&c.encode()), Some(c));
        }
        assert_eq!(Change::decode("nonsense"), None);
    }
}
