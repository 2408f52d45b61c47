//! Which URLs a webhook may be sent to. Only `http` and `https`, and never to
//! an address inside the service's own network: loopback, private,
//! link-local (which holds the cloud metadata service, 169.254.169.254),
//! carrier-grade NAT, multicast and reserved ranges, in IPv4 and IPv6
//! (including IPv4 addresses embedded in IPv6). Checked when an endpoint is
//! created or changed, and again for every connection a delivery opens: the
//! HTTP client resolves names through [`GuardedResolver`], so a name that
//! pointed at a public address at creation and at 127.0.0.1 now (DNS
//! rebinding) is refused. Redirects are never followed, so a public target
//! cannot bounce a delivery inward either. `WEBHOOKS_ALLOW_PRIVATE_TARGETS`
//! lifts the address rule (tests, private networks); the scheme rule stays.

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::Url;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Longest endpoint URL accepted, in bytes.
pub const MAX_URL_LEN: usize = 2048;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    #[error("url must be an absolute http or https URL")]
    NotHttp,
    #[error("url is longer than {MAX_URL_LEN} bytes")]
    TooLong,
    #[error("url has no host")]
    NoHost,
    #[error("the host {0} does not resolve")]
    Unresolvable(String),
    #[error("url points at {0}, a loopback, private, link-local or reserved address; webhooks go to public addresses only")]
    Private(IpAddr),
}

/// True if `ip` is an address a webhook may not reach.
pub fn is_forbidden(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => forbidden_v4(v4),
        IpAddr::V6(v6) => forbidden_v6(v6),
    }
}

fn forbidden_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || a == 0
        // Carrier-grade NAT (100.64.0.0/10), also where one cloud's metadata lives.
        || (a == 100 && (64..128).contains(&b))
        // IETF protocol assignments (192.0.0.0/24), another metadata address.
        || (a == 192 && b == 0 && c == 0)
        // Benchmarking (198.18.0.0/15) and reserved (240.0.0.0/4).
        || (a == 198 && (b == 18 || b == 19))
        || a >= 240
}

fn forbidden_v6(ip: Ipv6Addr) -> bool {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return forbidden_v4(v4);
    }
    let segments = ip.segments();
    // NAT64 (64:ff9b::/96) reaches the IPv4 address in its last 32 bits.
    if segments[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        let [.., hi, lo] = segments;
        return forbidden_v4(Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo)));
    }
    ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_multicast()
        // Unique local (fc00::/7) and link-local (fe80::/10).
        || (segments[0] & 0xfe00) == 0xfc00
        || (segments[0] & 0xffc0) == 0xfe80
        // Documentation (2001:db8::/32).
        || (segments[0] == 0x2001 && segments[1] == 0x0db8)
}

/// Checks a URL's form: scheme, length, host. Returns it parsed.
pub fn parse(raw: &str) -> Result<Url, TargetError> {
    if raw.len() > MAX_URL_LEN {
        return Err(TargetError::TooLong);
    }
    let url = Url::parse(raw).map_err(|_| TargetError::NotHttp)?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(TargetError::NotHttp);
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(TargetError::NoHost);
    }
    Ok(url)
}

/// Checks the URL's form and, unless `allow_private`, every address its host
/// resolves to now.
pub async fn check(raw: &str, allow_private: bool) -> Result<Url, TargetError> {
    let url = parse(raw)?;
    if !allow_private {
        let host = url.host_str().expect("parse checked the host");
        let port = url.port_or_known_default().unwrap_or(443);
        resolve_public(host, port).await?;
    }
    Ok(url)
}

/// Every address of `host`, if none of them is forbidden. An IP literal
/// (`[::1]` included) is its own address.
async fn resolve_public(host: &str, port: u16) -> Result<Vec<SocketAddr>, TargetError> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let addresses: Vec<SocketAddr> = match bare.parse::<IpAddr>() {
        Ok(ip) => vec![SocketAddr::new(ip, port)],
        Err(_) => tokio::net::lookup_host((bare, port))
            .await
            .map_err(|_| TargetError::Unresolvable(bare.to_owned()))?
            .collect(),
    };
    if addresses.is_empty() {
        return Err(TargetError::Unresolvable(bare.to_owned()));
    }
    match addresses.iter().find(|a| is_forbidden(a.ip())) {
        Some(forbidden) => Err(TargetError::Private(forbidden.ip())),
        None => Ok(addresses),
    }
}

/// The HTTP client's name resolution for deliveries: every address a name
/// resolves to is checked for every new connection, so DNS rebinding cannot
/// turn an approved name into an internal address.
#[derive(Debug, Clone, Copy)]
pub struct GuardedResolver {
    pub allow_private: bool,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let allow_private = self.allow_private;
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let addresses = if allow_private {
                tokio::net::lookup_host((host.as_str(), 0))
                    .await
                    .map_err(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>)?
                    .collect()
            } else {
                resolve_public(&host, 0).await.map_err(Box::new)?
            };
            Ok(Box::new(addresses.into_iter()) as Addrs)
        })
    }
}

/// The check a delivery makes itself before sending: the resolver never sees
/// a URL whose host is an IP literal.
pub fn check_literal(url: &Url, allow_private: bool) -> Result<(), TargetError> {
    let ip = match url.host() {
        Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip),
        Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip),
        _ => return Ok(()),
    };
    if !allow_private && is_forbidden(ip) {
        return Err(TargetError::Private(ip));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_ranges_are_forbidden_and_public_ones_are_not() {
        for forbidden in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.100.100.200",
            "192.0.0.192",
            "0.0.0.0",
            "255.255.255.255",
            "224.0.0.1",
            "::1",
            "::",
            "fd00:ec2::254",
            "fe80::1",
            "::ffff:127.0.0.1",
            "64:ff9b::a9fe:a9fe",
        ] {
            assert!(is_forbidden(forbidden.parse().unwrap()), "{forbidden}");
        }
        for public in [
            "93.184.215.14",
            "8.8.8.8",
            "2606:4700:4700::1111",
            "::ffff:8.8.8.8",
        ] {
            assert!(!is_forbidden(public.parse().unwrap()), "{public}");
        }
    }

    #[tokio::test]
    async fn urls_are_http_short_and_public_unless_allowed() {
        assert_eq!(
            check("ftp://example.com/", false).await,
            Err(TargetError::NotHttp)
        );
        assert_eq!(check("not a url", false).await, Err(TargetError::NotHttp));
        let long = format!("https://example.com/{}", "a".repeat(MAX_URL_LEN));
        assert_eq!(check(&long, false).await, Err(TargetError::TooLong));
        assert!(matches!(
            check("http://127.0.0.1:9/hook", false).await,
            Err(TargetError::Private(_))
        ));
        assert!(matches!(
            check("http://[::1]:9/hook", false).await,
            Err(TargetError::Private(_))
        ));
        assert!(matches!(
            check("http://localhost:9/hook", false).await,
            Err(TargetError::Private(_))
        ));
        assert!(check("http://127.0.0.1:9/hook", true).await.is_ok());
    }
}
