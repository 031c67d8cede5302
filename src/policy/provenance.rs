//! Where an ACS identity lives. An id means something only on the ACS resource that issued
//! it, so the operator records, with the id, the resource (its normalised endpoint) and the
//! connection it was created or adopted through: its [`Home`]. Pure: the controller gives the
//! endpoint its connection reaches now and the homes its cache of AcsIdentities records.
//!
//! - **An identity stays home.** A token is issued or revoked, and an identity deleted, only
//!   through a connection that reaches the resource it lives on; a `connectionRef` moved to
//!   another resource is never taken as the same identity there: it is refused, or taken as
//!   an adoption with that connection's rules ([`super::tenancy::admit`]).
//! - **A create's answer is checked** ([`check_created`]): the id must be `8:…acs:<resource>_…`,
//!   not an id another AcsIdentity holds on that resource, and of the resource the endpoint is
//!   known to have: not the known resource of another endpoint. What is "known" comes only
//!   from homes recorded through ClusterAcsConnections (the platform's endpoints), so no
//!   tenant's server can teach the operator anything, not even to refuse the platform's own
//!   answers (a refused answer is an identity left on the bill).

use crate::api::ConnectionKind;

/// The connection an identity goes through, as its `connectionRef` names it (namespace empty
/// for a ClusterAcsConnection).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Via<'a> {
    pub kind: ConnectionKind,
    pub namespace: &'a str,
    pub name: &'a str,
}

impl Via<'_> {
    /// Through a ClusterAcsConnection: the platform's shared resource and bill.
    pub fn shared(&self) -> bool {
        self.kind == ConnectionKind::ClusterAcsConnection
    }
}

/// Where an ACS identity lives: the resource it was created or adopted on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Home<'a> {
    /// The resource's endpoint, normalised ([`normalise_endpoint`]).
    pub endpoint: &'a str,
    /// The connection it was created or adopted through.
    pub via: Via<'a>,
    /// Adopted (`spec.identityId`), not created by this object.
    pub adopted: bool,
}

/// Where a connection reaches now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Here<'a> {
    /// Normalised endpoint of the resource the connection reaches.
    pub endpoint: &'a str,
    /// The `connectionRef` that reaches it.
    pub via: Via<'a>,
}

impl<'a> Here<'a> {
    /// The home of an identity created (or adopted) here.
    pub fn home(self, adopted: bool) -> Home<'a> {
        Home {
            endpoint: self.endpoint,
            via: self.via,
            adopted,
        }
    }
}

/// An endpoint as it names a resource: scheme, host (lower case) and a port other than the
/// scheme's default; no path, no trailing slash. `None` when it is not an absolute URL.
pub fn normalise_endpoint(endpoint: &str) -> Option<String> {
    let url = url::Url::parse(endpoint).ok()?;
    url.host_str()?;
    Some(url.origin().ascii_serialization())
}

/// The resource part of an ACS id: `<resource>` in `8:acs:<resource>_<id>` (also the
/// sovereign clouds' `8:gcch-acs:` and `8:dod-acs:`). `None` when the id is not of that shape.
pub fn resource_of(id: &str) -> Option<&str> {
    let rest = id.strip_prefix("8:")?;
    let (cloud, rest) = rest.split_once(':')?;
    if !cloud.ends_with("acs") {
        return None;
    }
    let (resource, user) = rest.split_once('_')?;
    let ok = |s: &str| {
        !s.is_empty() && s.len() <= 128 && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
    };
    (ok(resource) && !user.is_empty()).then_some(resource)
}

/// A home some AcsIdentity records for the id it holds, as [`check_created`] reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recorded<'a> {
    pub uid: &'a str,
    pub namespace: &'a str,
    pub id: &'a str,
    /// `None`: written by the previous version, home unknown.
    pub home: Option<Home<'a>>,
}

/// Why an answer to a create is not taken as a new identity of the resource asked. The
/// message does not say which (a tenant's own server chose the id; it learns nothing of
/// where else an id is held).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotNew {
    /// Not `8:acs:<resource>_<id>`.
    Malformed,
    /// Another AcsIdentity holds it on this resource (or its home is unknown).
    Held,
    /// Its resource is not the one this endpoint is known to have, or is the known resource
    /// of another endpoint (as the platform's connections know them).
    OtherResource,
}

/// Whether `id`, answered by a create that `uid` sent `here`, is a new identity
/// of the resource asked, given the homes recorded by every AcsIdentity (`recorded`).
pub fn check_created<'a>(
    id: &str,
    here: Here<'_>,
    uid: &str,
    recorded: impl IntoIterator<Item = Recorded<'a>>,
) -> Result<(), NotNew> {
    let others: Vec<Recorded<'a>> = recorded.into_iter().filter(|r| r.uid != uid).collect();
    let held = others.iter().any(|r| holds_here(r, id, here));
    let shared = others.iter().filter_map(shared_home);
    check_answer(id, here, held, shared)
}

/// Whether `r` holds `id` here, or where nobody knows (the previous version's records).
pub fn holds_here(r: &Recorded<'_>, id: &str, here: Here<'_>) -> bool {
    r.id == id && r.home.is_none_or(|h| h.endpoint == here.endpoint)
}

/// The (endpoint, resource) that `r` teaches: its home's endpoint and its id's resource, when
/// it was learned through a shared connection. Only what the platform's connections learned
/// is trusted: a namespace's own server could otherwise teach the operator to refuse the
/// platform's answers (each refused answer an identity left on the shared bill).
pub fn shared_home<'a>(r: &Recorded<'a>) -> Option<(&'a str, &'a str)> {
    let home = r.home.filter(|h| h.via.shared())?;
    Some((home.endpoint, resource_of(r.id)?))
}

/// [`check_created`] from what it reads of the others: whether another holds `id` here
/// ([`holds_here`]), and the (endpoint, resource) pairs the shared connections taught
/// ([`shared_home`]). The operator keeps both as counts beside its cache, so that a create
/// does not walk every identity.
pub fn check_answer<'a>(
    id: &str,
    here: Here<'_>,
    held: bool,
    shared: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Result<(), NotNew> {
    let resource = resource_of(id).ok_or(NotNew::Malformed)?;
    if held {
        return Err(NotNew::Held);
    }
    let other_resource = shared
        .into_iter()
        .any(|(endpoint, theirs)| (endpoint == here.endpoint) != (theirs == resource));
    if other_resource {
        return Err(NotNew::OtherResource);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const PLATFORM: &str = "https://platform.communication.azure.com";
    const FAKE: &str = "https://fake.team-b.example";

    fn cluster() -> Via<'static> {
        Via {
            kind: ConnectionKind::ClusterAcsConnection,
            namespace: "",
            name: "shared",
        }
    }

    fn own(namespace: &'static str) -> Via<'static> {
        Via {
            kind: ConnectionKind::AcsConnection,
            namespace,
            name: "own",
        }
    }

    #[test]
    fn endpoints_are_compared_as_origins() {
        let cases = [
            (
                "https://X.communication.azure.com/",
                Some("https://x.communication.azure.com"),
            ),
            (
                "https://x.communication.azure.com:443/path?q",
                Some("https://x.communication.azure.com"),
            ),
            ("https://127.0.0.1:8443", Some("https://127.0.0.1:8443")),
            ("not a url", None),
        ];
        for (endpoint, want) in cases {
            assert_eq!(normalise_endpoint(endpoint).as_deref(), want, "{endpoint}");
        }
    }

    #[test]
    fn the_resource_part_of_an_id() {
        let cases = [
            ("8:acs:2dee53b4-368b_00000005-14a2", Some("2dee53b4-368b")),
            ("8:gcch-acs:r1_u", Some("r1")),
            ("8:dod-acs:r1_u", Some("r1")),
            ("8:acs:r1_", None),
            ("8:acs:_u", None),
            ("8:teamsvisitor:r1_u", None),
            ("8:acs:r/1_u", None),
            ("acs:r1_u", None),
        ];
        for (id, want) in cases {
            assert_eq!(resource_of(id), want, "{id}");
        }
    }

    #[test]
    fn a_create_answer_must_be_a_new_identity_of_the_resource_asked() {
        let platform_home = Some(Home {
            endpoint: PLATFORM,
            via: cluster(),
            adopted: false,
        });
        let alice = Recorded {
            uid: "alice",
            namespace: "team-a",
            id: "8:acs:P_alice",
            home: platform_home,
        };
        let at_fake = Here {
            endpoint: FAKE,
            via: own("team-b"),
        };
        let at_platform = Here {
            endpoint: PLATFORM,
            via: cluster(),
        };
        let fake_c = Recorded {
            uid: "c1",
            namespace: "team-c",
            id: "8:acs:Q_c1",
            home: Some(Home {
                endpoint: FAKE,
                via: own("team-c"),
                adopted: false,
            }),
        };
        let legacy = Recorded {
            uid: "old",
            namespace: "team-a",
            id: "8:acs:P_old",
            home: None,
        };
        type Case<'a> = (&'a str, &'a str, Here<'a>, Result<(), NotNew>);
        let cases: [Case; 9] = [
            (
                "a new id of the platform",
                "8:acs:P_new",
                at_platform,
                Ok(()),
            ),
            (
                "alice's id from team-b's server",
                "8:acs:P_alice",
                at_fake,
                Err(NotNew::OtherResource),
            ),
            (
                "an unheld id of the platform's resource from team-b's server",
                "8:acs:P_free",
                at_fake,
                Err(NotNew::OtherResource),
            ),
            (
                "the platform answering another resource's id",
                "8:acs:Z_1",
                at_platform,
                Err(NotNew::OtherResource),
            ),
            (
                "the platform answering an id alice holds",
                "8:acs:P_alice",
                at_platform,
                Err(NotNew::Held),
            ),
            (
                "an id of the previous version's records, anywhere",
                "8:acs:P_old",
                at_fake,
                Err(NotNew::Held),
            ),
            ("not an ACS id", "alice", at_fake, Err(NotNew::Malformed)),
            (
                "another namespace's server teaches team-b nothing",
                "8:acs:Q_2",
                at_fake,
                Ok(()),
            ),
            ("team-b's own resource", "8:acs:B_1", at_fake, Ok(())),
        ];
        for (what, id, here, want) in cases {
            let recorded = [alice, fake_c, legacy];
            assert_eq!(check_created(id, here, "me", recorded), want, "{what}");
            let held = recorded.iter().any(|r| holds_here(r, id, here));
            let shared = recorded.iter().filter_map(shared_home);
            assert_eq!(
                check_answer(id, here, held, shared),
                want,
                "{what}: what the operator counts gives the same answer"
            );
        }
        // A namespace's own server teaches nothing, not even to refuse the platform.
        let poisoned = Recorded {
            uid: "b1",
            namespace: "team-b",
            id: "8:acs:P_free",
            home: Some(at_fake.home(true)),
        };
        assert_eq!(
            check_created("8:acs:P_new", at_platform, "me", [poisoned]),
            Ok(())
        );
        // One's own earlier answer (an idempotent create's retry) is no conflict.
        let mine = Recorded {
            uid: "me",
            namespace: "team-b",
            id: "8:acs:B_1",
            home: Some(at_fake.home(false)),
        };
        assert_eq!(check_created("8:acs:B_1", at_fake, "me", [mine]), Ok(()));
    }
}
