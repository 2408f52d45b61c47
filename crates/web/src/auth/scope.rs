//! What an API key may do. Every route declares the one scope it needs in its
//! `#[utoipa::path]` (`security(("bearer" = ["leads:export"]))`), the OpenAPI
//! way of naming what an operation requires; [`crate::access`] reads those
//! declarations into the table it enforces, so the document and the
//! enforcement cannot disagree, and a route that declares none is refused when
//! the router is built.

use std::fmt;

/// One permission. Scopes are independent: `campaigns:write` does not imply
/// `campaigns:read`, nor `leads:export` `leads:read` (a key gets exactly what
/// it lists; a key created without `--scope` gets every scope).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    /// Read campaigns, their tasks, content and media.
    CampaignsRead,
    /// Create, change and delete campaigns, tasks, content and media.
    CampaignsWrite,
    AnalyticsRead,
    AnalyticsWrite,
    /// Read leads (the lead resources, personal data included).
    LeadsRead,
    /// Create, change, delete and import leads.
    LeadsWrite,
    /// The CSV export, and lead personal data in the audit history.
    LeadsExport,
    /// A campaign's audit history (lead personal data only with `leads:export`).
    HistoryRead,
    /// The event feed.
    EventsRead,
    /// Webhook endpoints, their secrets and deliveries.
    WebhooksManage,
}

impl Scope {
    /// Every scope, in the order listings show them.
    pub const ALL: [Scope; 10] = [
        Scope::CampaignsRead,
        Scope::CampaignsWrite,
        Scope::AnalyticsRead,
        Scope::AnalyticsWrite,
        Scope::LeadsRead,
        Scope::LeadsWrite,
        Scope::LeadsExport,
        Scope::HistoryRead,
        Scope::EventsRead,
        Scope::WebhooksManage,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            Scope::CampaignsRead => "campaigns:read",
            Scope::CampaignsWrite => "campaigns:write",
            Scope::AnalyticsRead => "analytics:read",
            Scope::AnalyticsWrite => "analytics:write",
            Scope::LeadsRead => "leads:read",
            Scope::LeadsWrite => "leads:write",
            Scope::LeadsExport => "leads:export",
            Scope::HistoryRead => "history:read",
            Scope::EventsRead => "events:read",
            Scope::WebhooksManage => "webhooks:manage",
        }
    }

    pub fn parse(raw: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|scope| scope.as_str() == raw)
            .ok_or_else(|| {
                let known: Vec<&str> = Self::ALL.iter().map(|s| s.as_str()).collect();
                format!("unknown scope {raw:?}; the scopes are {}", known.join(", "))
            })
    }

    const fn bit(self) -> u16 {
        1 << self as u16
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Scope {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// A set of scopes: what a key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scopes(u16);

impl Scopes {
    pub const fn all() -> Self {
        let mut bits = 0;
        let mut i = 0;
        while i < Scope::ALL.len() {
            bits |= Scope::ALL[i].bit();
            i += 1;
        }
        Self(bits)
    }

    pub fn of(scopes: impl IntoIterator<Item = Scope>) -> Self {
        Self(scopes.into_iter().fold(0, |bits, s| bits | s.bit()))
    }

    pub fn contains(self, scope: Scope) -> bool {
        self.0 & scope.bit() != 0
    }

    pub fn is_all(self) -> bool {
        self == Self::all()
    }

    pub fn iter(self) -> impl Iterator<Item = Scope> {
        Scope::ALL.into_iter().filter(move |s| self.contains(*s))
    }

    /// As stored: `None` for every scope (a key created without `--scope`,
    /// which keeps every scope added later too), else the names.
    pub fn to_stored(self) -> Option<Vec<String>> {
        (!self.is_all()).then(|| self.iter().map(|s| s.as_str().to_owned()).collect())
    }

    /// From what [`Scopes::to_stored`] wrote. A name this build does not know
    /// (a scope since removed) grants nothing.
    pub fn from_stored(stored: Option<Vec<String>>) -> Self {
        match stored {
            None => Self::all(),
            Some(names) => Self::of(names.iter().filter_map(|n| Scope::parse(n).ok())),
        }
    }
}

/// As the list of names (every scope listed for a key with all of them).
impl serde::Serialize for Scopes {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.iter().map(Scope::as_str))
    }
}

impl fmt::Display for Scopes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_all() {
            return f.write_str("all");
        }
        let names: Vec<&str> = self.iter().map(Scope::as_str).collect();
        f.write_str(&names.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_round_trip_through_their_names_and_storage() {
        for scope in Scope::ALL {
            assert_eq!(Scope::parse(scope.as_str()), Ok(scope));
            let one = Scopes::of([scope]);
            assert!(one.contains(scope));
            assert_eq!(one.iter().count(), 1);
            assert_eq!(Scopes::from_stored(one.to_stored()), one);
        }
        assert_eq!(Scopes::all().to_stored(), None);
        assert_eq!(Scopes::from_stored(None), Scopes::all());
        assert_eq!(Scopes::of(Scope::ALL), Scopes::all());
        assert_eq!(Scopes::all().to_string(), "all");
        assert_eq!(
            Scopes::of([Scope::LeadsExport, Scope::CampaignsRead]).to_string(),
            "campaigns:read,leads:export"
        );
        assert!(Scope::parse("leads:delete").unwrap_err().contains("leads:export"));
        assert_eq!(
            Scopes::from_stored(Some(vec!["gone:read".into(), "leads:read".into()])),
            Scopes::of([Scope::LeadsRead])
        );
    }
}
