//! What a media URL may point at. These URLs come from the network, so before any connection
//! the host must be on the allowlist, and after DNS every address must be public unless the
//! operator allowed private networks. IPv4 hidden inside IPv6 (mapped, compatible, NAT64,
//! 6to4) is unwrapped and judged as IPv4.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Whether `host` matches an allowlist entry: `*.example.com` matches any subdomain (not the
/// apex), anything else matches exactly; case-insensitive; IPv6 literals with or without [].
pub fn host_allowed(host: &str, allowed: &[String]) -> bool {
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .trim_end_matches('.')
        .to_ascii_lowercase();
    allowed.iter().any(|pattern| {
        let p = pattern
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_ascii_lowercase();
        match p.strip_prefix("*.") {
            Some(suffix) => host.len() > suffix.len() + 1 && host.ends_with(&format!(".{suffix}")),
            None => host == p,
        }
    })
}

/// Addresses a fetch must never reach unless private networks are allowed: loopback,
/// private, shared (CGNAT), link-local, unspecified, multicast, broadcast and reserved ranges.
pub fn forbidden(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => forbidden_v4(v4),
        IpAddr::V6(v6) => match embedded_v4(v6) {
            Some(v4) => forbidden_v4(v4),
            None => forbidden_v6(v6),
        },
    }
}

fn forbidden_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || a == 0
        || (a == 100 && (64..128).contains(&b)) // shared address space, 100.64.0.0/10
        || (a == 192 && b == 0 && ip.octets()[2] == 0) // IETF protocol assignments
        || a >= 240 // reserved, 240.0.0.0/4
}

fn forbidden_v6(ip: Ipv6Addr) -> bool {
    let s = ip.segments();
    ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        || (s[0] & 0xfe00) == 0xfc00 // unique local, fc00::/7
        || (s[0] & 0xffc0) == 0xfe80 // link-local, fe80::/10
        || (s[0] & 0xffc0) == 0xfec0 // site-local (deprecated), fec0::/10
        || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation
        || (s[0] == 0x0100 && s[1] == 0 && s[2] == 0 && s[3] == 0) // discard-only, 100::/64
}

/// IPv4 carried inside an IPv6 address: mapped (::ffff:a.b.c.d), compatible (::a.b.c.d),
/// NAT64 (64:ff9b::/96) and 6to4 (2002:aabb:ccdd::/48).
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return Some(v4);
    }
    let s = ip.segments();
    let tail = || Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    if s[..6] == [0, 0, 0, 0, 0, 0] && !(s[6] == 0 && s[7] <= 1) {
        return Some(tail());
    }
    if s[0] == 0x0064 && s[1] == 0xff9b && s[2..6] == [0, 0, 0, 0] {
        return Some(tail());
    }
    if s[0] == 0x2002 {
        return Some(Ipv4Addr::new(
            (s[1] >> 8) as u8,
            s[1] as u8,
            (s[2] >> 8) as u8,
            s[2] as u8,
        ));
    }
    None
}

/// A URL with its query and fragment removed: what may be logged, stored and shown.
pub fn redact(url: &str) -> String {
    url.split(['?', '#']).next().unwrap_or_default().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bad(s: &str) -> bool {
        forbidden(s.parse().unwrap())
    }

    #[test]
    fn private_and_special_ranges_are_refused() {
        for ip in [
            "127.0.0.1",
            "127.255.0.9",
            "10.0.0.1",
            "10.255.255.255",
            "172.16.0.1",
            "172.31.255.254",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "0.1.2.3",
            "100.64.0.1",
            "100.127.255.255",
            "255.255.255.255",
            "224.0.0.1",
            "240.0.0.1",
            "192.0.0.8",
            "::1",
            "::",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "febf::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:10.1.2.3",
            "::ffff:169.254.169.254",
            "::127.0.0.1",
            "64:ff9b::a00:1",
            "64:ff9b::7f00:1",
            "2002:7f00:1::",
            "2002:c0a8:101::1",
            "2001:db8::1",
        ] {
            assert!(bad(ip), "{ip} must be refused");
        }
    }

    #[test]
    fn public_addresses_pass() {
        for ip in [
            "13.32.0.1",
            "8.8.8.8",
            "172.32.0.1",
            "100.128.0.1",
            "2600:9000:2000::1",
            "::ffff:13.32.0.1",
            "64:ff9b::d20:1",
        ] {
            assert!(!bad(ip), "{ip} is public");
        }
    }

    #[test]
    fn allowlist_matches_subdomains_and_exact_hosts() {
        let allowed = vec![
            "*.cloudfront.net".to_string(),
            "media.example.com".to_string(),
            "::1".to_string(),
        ];
        assert!(host_allowed("d1234567abcdef.cloudfront.net", &allowed));
        assert!(host_allowed("D1.CloudFront.NET", &allowed));
        assert!(!host_allowed("cloudfront.net", &allowed));
        assert!(!host_allowed("evilcloudfront.net", &allowed));
        assert!(!host_allowed("cloudfront.net.evil.com", &allowed));
        assert!(host_allowed("media.example.com", &allowed));
        assert!(!host_allowed("x.media.example.com", &allowed));
        assert!(host_allowed("[::1]", &allowed));
    }

    #[test]
    fn redaction_drops_the_credential() {
        assert_eq!(
            redact(
                "https://d1.cloudfront.net/audio/call.mp3?X-Amz-Signature=abc&X-Amz-Credential=k#x"
            ),
            "https://d1.cloudfront.net/audio/call.mp3"
        );
    }
}
