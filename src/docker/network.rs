//! Berth's network on a host, as far as addresses go: the subnet it was
//! created with and which addresses are taken. Pure.
//!
//! A network Berth creates gets a subnet of its own, split in two: the
//! daemon hands out addresses of the lower half to containers without a
//! fixed one (jobs, anything a user attaches), and Berth gives each service
//! and worker instance a fixed address from the upper half. A fixed address
//! survives a restart of the container or of the daemon, so the ingress,
//! which routes to addresses, never points at a stale one.

use std::collections::BTreeSet;
use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

/// An IPv4 network, `a.b.c.d/len`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Subnet {
    base: Ipv4Addr,
    len: u8,
}

impl Subnet {
    /// The network with `len` leading bits of `addr` (host bits cleared).
    pub fn new(addr: Ipv4Addr, len: u8) -> Option<Subnet> {
        if len > 32 {
            return None;
        }
        let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
        Some(Subnet {
            base: Ipv4Addr::from(u32::from(addr) & mask),
            len,
        })
    }

    /// Number of addresses.
    fn size(&self) -> u64 {
        1u64 << (32 - u32::from(self.len))
    }

    /// The first half, which the daemon allocates from (`--ip-range`).
    pub fn lower_half(&self) -> Subnet {
        Subnet {
            base: self.base,
            len: (self.len + 1).min(32),
        }
    }

    /// Whether `addr` lies in this network.
    pub fn contains(&self, addr: Ipv4Addr) -> bool {
        Subnet::new(addr, self.len).is_some_and(|s| s.base == self.base)
    }

    /// The addresses Berth gives out: the upper half, without its first
    /// and last (broadcast) address.
    pub fn fixed_range(&self) -> impl Iterator<Item = Ipv4Addr> {
        let base = u64::from(u32::from(self.base));
        let size = self.size();
        let start = base + size / 2 + 1;
        let end = base + size.saturating_sub(1);
        (start..end).filter_map(|a| u32::try_from(a).ok().map(Ipv4Addr::from))
    }
}

impl fmt::Display for Subnet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.base, self.len)
    }
}

impl FromStr for Subnet {
    type Err = String;

    fn from_str(s: &str) -> Result<Subnet, String> {
        let (addr, len) = s
            .split_once('/')
            .ok_or_else(|| format!("{s:?} is not a.b.c.d/len"))?;
        let addr: Ipv4Addr = addr
            .parse()
            .map_err(|_| format!("{s:?}: {addr:?} is not an IPv4 address"))?;
        let len: u8 = len
            .parse()
            .map_err(|_| format!("{s:?}: {len:?} is not a prefix length"))?;
        // Too small to split into two useful halves.
        if len > 28 {
            return Err(format!("{s:?} is too small for Berth's network"));
        }
        Subnet::new(addr, len).ok_or_else(|| format!("{s:?} has an invalid prefix length"))
    }
}

/// Berth's network on one host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetworkInfo {
    pub name: String,
    /// The subnet Berth created it with; `None` for a network created
    /// without one (by an older Berth): instances then get addresses from
    /// the daemon, and a restart may change them.
    pub subnet: Option<Subnet>,
    /// Addresses held by containers attached now.
    pub used: BTreeSet<Ipv4Addr>,
}

impl NetworkInfo {
    /// A fixed address for a new instance: the first of the upper half not
    /// held now and not in `taken` (addresses already handed out by the
    /// caller). `None` without a subnet or when the range is full.
    pub fn free_address(&self, taken: &BTreeSet<Ipv4Addr>) -> Option<Ipv4Addr> {
        self.free_address_from(taken, 0)
    }

    /// As [`free_address`](Self::free_address), scanning from the
    /// `seed`-th address of the range (wrapping around), so that deploys
    /// running at once, each from its own observation, start far apart
    /// instead of all asking for the lowest free address.
    pub fn free_address_from(&self, taken: &BTreeSet<Ipv4Addr>, seed: u64) -> Option<Ipv4Addr> {
        let subnet = self.subnet?;
        let range: Vec<Ipv4Addr> = subnet.fixed_range().collect();
        if range.is_empty() {
            return None;
        }
        let start = (seed % range.len() as u64) as usize;
        range[start..]
            .iter()
            .chain(&range[..start])
            .copied()
            .find(|a| !self.used.contains(a) && !taken.contains(a))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeded_scans_start_apart_and_wrap() {
        let network = NetworkInfo {
            name: "berth".into(),
            subnet: Some("10.9.0.0/28".parse().unwrap()),
            used: BTreeSet::from(["10.9.0.9".parse().unwrap()]),
        };
        let range: Vec<Ipv4Addr> = network.subnet.unwrap().fixed_range().collect();
        let none = BTreeSet::new();
        assert_eq!(
            network.free_address(&none),
            Some(range[1]),
            "range[0] is used"
        );
        assert_eq!(network.free_address_from(&none, 3), Some(range[3]));
        // Wraps past the end to what is free at the start.
        let late: BTreeSet<Ipv4Addr> = range[4..].iter().copied().collect();
        assert_eq!(network.free_address_from(&late, 5), Some(range[1]));
        let all: BTreeSet<Ipv4Addr> = range.iter().copied().collect();
        assert_eq!(network.free_address_from(&all, 2), None);
    }

    #[test]
    fn subnets_parse_print_and_split() {
        let s: Subnet = "172.20.0.0/16".parse().unwrap();
        assert_eq!(s.to_string(), "172.20.0.0/16");
        assert_eq!(s.lower_half().to_string(), "172.20.0.0/17");
        assert!(s.contains("172.20.255.1".parse().unwrap()));
        assert!(!s.contains("172.21.0.1".parse().unwrap()));
        let first = s.fixed_range().next().unwrap();
        assert_eq!(first, "172.20.128.1".parse::<Ipv4Addr>().unwrap());
        assert_eq!(
            s.fixed_range().last().unwrap(),
            "172.20.255.254".parse::<Ipv4Addr>().unwrap()
        );
        let host_bits: Subnet = "192.168.16.7/20".parse().unwrap();
        assert_eq!(host_bits.to_string(), "192.168.16.0/20");
        for bad in ["172.20.0.0", "x/16", "172.20.0.0/33", "10.0.0.0/30"] {
            assert!(bad.parse::<Subnet>().is_err(), "{bad}");
        }
    }

    #[test]
    fn free_addresses_skip_used_and_taken_ones() {
        let subnet: Subnet = "10.9.0.0/24".parse().unwrap();
        let info = NetworkInfo {
            name: "berth".into(),
            subnet: Some(subnet),
            used: ["10.9.0.129".parse().unwrap(), "10.9.0.5".parse().unwrap()].into(),
        };
        let taken = ["10.9.0.130".parse().unwrap()].into();
        assert_eq!(
            info.free_address(&taken),
            Some("10.9.0.131".parse().unwrap())
        );
        let legacy = NetworkInfo {
            subnet: None,
            ..info.clone()
        };
        assert_eq!(legacy.free_address(&taken), None);
        let full: BTreeSet<Ipv4Addr> = subnet.fixed_range().collect();
        assert_eq!(info.free_address(&full), None);
    }
}
