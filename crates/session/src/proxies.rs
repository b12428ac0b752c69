//! [`TrustedProxies`]: which address a connection counts as coming from when Titan sits behind
//! reverse proxies (a TLS-terminating load balancer, nginx). Without it every client of a proxy
//! shares the proxy's address, so the per-IP connection rate (`limits.connections_per_ip_per_second`)
//! would throttle all of them together, and the logs would name the proxy.
//!
//! Only proxies listed in `server.trusted_proxies` are believed. Each proxy appends the address
//! it got the connection from to `X-Forwarded-For`, so the header is read from the right: the
//! first address that is not a trusted proxy is the client. Anything a client wrote into the
//! header itself lies to the left of that and is never reached; a connection whose TCP peer is
//! not a trusted proxy counts as coming from that peer, whatever its headers say.

use actix_web::HttpRequest;
use actix_web::http::header::HeaderName;
use ipnet::IpNet;
use std::net::{IpAddr, SocketAddr};

/// The `X-Forwarded-For` header (de facto standard; RFC 7239's `Forwarded` is not read).
static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// The proxies whose `X-Forwarded-For` is believed (see the module docs). Empty: none.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    /// Reads `server.trusted_proxies`: IP addresses (`10.0.0.7`, `::1`) and CIDR networks
    /// (`10.0.0.0/8`, `fd00::/8`). `Err` names the first entry that is neither.
    pub fn parse(entries: &[String]) -> Result<Self, String> {
        entries
            .iter()
            .map(|entry| {
                let text = entry.trim();
                text.parse::<IpNet>()
                    .or_else(|_| text.parse::<IpAddr>().map(IpNet::from))
                    .map_err(|_| entry.clone())
            })
            .collect::<Result<_, _>>()
            .map(Self)
    }

    fn trusts(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.0.iter().any(|net| net.contains(&ip))
    }

    /// The client's address: the TCP peer, or, when that is a trusted proxy, the address its
    /// `X-Forwarded-For` chain gives (see the module docs).
    pub fn client_ip(&self, req: &HttpRequest) -> Option<IpAddr> {
        let peer = req.peer_addr()?.ip();
        let forwarded = req
            .headers()
            .get_all(&X_FORWARDED_FOR)
            .filter_map(|value| value.to_str().ok());
        Some(self.resolve(peer, forwarded))
    }

    /// [`Self::client_ip`] on its parts: the TCP peer and the `X-Forwarded-For` header lines in
    /// the order received (several lines are one list).
    fn resolve<'a>(&self, peer: IpAddr, forwarded: impl Iterator<Item = &'a str>) -> IpAddr {
        // An IPv4 client of a dual-stack listener is one address, however it arrived.
        let peer = peer.to_canonical();
        if !self.trusts(peer) {
            return peer;
        }
        let hops: Vec<&str> = forwarded.flat_map(|line| line.split(',')).collect();
        let mut client = peer;
        for hop in hops.iter().rev() {
            // An entry a trusted proxy wrote that is not an address ends the chain at the
            // nearest address known to be real.
            let Some(ip) = parse_hop(hop) else {
                break;
            };
            client = ip;
            if !self.trusts(ip) {
                break;
            }
        }
        client
    }
}

/// One `X-Forwarded-For` entry: an address, with or without a port (`1.2.3.4:5678`,
/// `[::1]:5678`) as some proxies write it.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    let hop = hop.trim();
    hop.parse::<IpAddr>()
        .or_else(|_| hop.parse::<SocketAddr>().map(|a| a.ip()))
        .ok()
        .map(|ip| ip.to_canonical())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proxies(list: &[&str]) -> TrustedProxies {
        TrustedProxies::parse(&list.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>()).unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn addresses_and_networks_parse_and_anything_else_is_named() {
        let p = proxies(&["10.0.0.7", " 192.168.0.0/16 ", "::1", "fd00::/8"]);
        for trusted in [
            "10.0.0.7",
            "192.168.200.1",
            "::1",
            "fd12::1",
            "::ffff:10.0.0.7",
        ] {
            assert!(p.trusts(ip(trusted)), "{trusted}");
        }
        for other in ["10.0.0.8", "192.169.0.1", "::2", "fe80::1"] {
            assert!(!p.trusts(ip(other)), "{other}");
        }
        let bad = ["10.0.0.0/33".to_owned(), "proxy.local".to_owned()];
        assert_eq!(TrustedProxies::parse(&bad[..1]).unwrap_err(), "10.0.0.0/33");
        assert_eq!(TrustedProxies::parse(&bad[1..]).unwrap_err(), "proxy.local");
    }

    #[test]
    fn the_first_untrusted_address_from_the_right_is_the_client() {
        let p = proxies(&["127.0.0.1", "10.0.0.0/8"]);
        let proxy = "127.0.0.1";
        let cases: &[(&str, &[&str], &str)] = &[
            // Through one proxy; through two (the load balancer's address appended by nginx).
            (proxy, &["203.0.113.5"], "203.0.113.5"),
            (proxy, &["203.0.113.5, 10.1.2.3"], "203.0.113.5"),
            // What the client wrote itself lies left of its real address and is never reached.
            (proxy, &["6.6.6.6, 203.0.113.5"], "203.0.113.5"),
            (proxy, &["6.6.6.6", "203.0.113.5,10.0.0.9"], "203.0.113.5"),
            // Ports and IPv6 as some proxies write them; IPv4 mapped into IPv6.
            (proxy, &["203.0.113.5:40000"], "203.0.113.5"),
            (proxy, &["[2001:db8::5]:40000"], "2001:db8::5"),
            ("::ffff:127.0.0.1", &["::ffff:203.0.113.5"], "203.0.113.5"),
            // No header, an empty one, or only proxies: the nearest address known.
            (proxy, &[], proxy),
            (proxy, &[""], proxy),
            (proxy, &["10.0.0.2, 10.0.0.3"], "10.0.0.2"),
            // Garbage written by a trusted proxy stops the walk at the last real address.
            (proxy, &["203.0.113.5, unknown"], proxy),
            (proxy, &["unknown, 10.0.0.2"], "10.0.0.2"),
            // A peer that is not a trusted proxy is the client, whatever it claims.
            ("198.51.100.1", &["203.0.113.5"], "198.51.100.1"),
            ("::ffff:198.51.100.1", &[], "198.51.100.1"),
        ];
        for &(peer, lines, client) in cases {
            let got = p.resolve(ip(peer), lines.iter().copied());
            assert_eq!(got, ip(client), "{peer} {lines:?}");
        }
        let nobody = TrustedProxies::default();
        assert_eq!(
            nobody.resolve(ip(proxy), ["203.0.113.5"].into_iter()),
            ip(proxy)
        );
    }
}
