//! IPv4 CIDR blocks as EC2 uses them: VPCs and subnets, their overlap and containment, and the
//! addresses a subnet can give to network interfaces.

use std::fmt;
use std::net::Ipv4Addr;

/// An IPv4 block `address/prefix` whose address is the network address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cidr {
    network: u32,
    prefix: u8,
}

impl Cidr {
    /// Parses `a.b.c.d/n`; the address must be the block's network address (EC2 refuses
    /// `10.0.0.1/16`).
    pub fn parse(s: &str) -> Option<Cidr> {
        let (addr, prefix) = s.split_once('/')?;
        let addr: Ipv4Addr = addr.parse().ok()?;
        if prefix.is_empty() || prefix.len() > 2 || !prefix.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let prefix: u8 = prefix.parse().ok()?;
        if prefix > 32 {
            return None;
        }
        let network = u32::from(addr);
        let c = Cidr { network, prefix };
        (network & c.mask() == network).then_some(c)
    }

    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    fn mask(&self) -> u32 {
        if self.prefix == 0 {
            0
        } else {
            u32::MAX << (32 - self.prefix)
        }
    }

    /// How many addresses the block holds.
    pub fn size(&self) -> u64 {
        1u64 << (32 - self.prefix)
    }

    pub fn contains_addr(&self, a: Ipv4Addr) -> bool {
        u32::from(a) & self.mask() == self.network
    }

    /// Whether `other` lies wholly inside this block.
    pub fn contains(&self, other: &Cidr) -> bool {
        other.prefix >= self.prefix && other.network & self.mask() == self.network
    }

    pub fn overlaps(&self, other: &Cidr) -> bool {
        self.contains(other) || other.contains(self)
    }

    /// The `n`th address of the block (0 is the network address), if the block has one.
    pub fn nth(&self, n: u64) -> Option<Ipv4Addr> {
        (n < self.size()).then(|| Ipv4Addr::from(self.network + n as u32))
    }

    /// The subnet's router: its first address after the network address.
    pub fn router(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.network.wrapping_add(1))
    }

    /// The addresses EC2 lets a subnet give to interfaces, in order: all but the first four
    /// (network, router, DNS, reserved) and the last (broadcast).
    pub fn assignable(&self) -> impl Iterator<Item = Ipv4Addr> + '_ {
        let size = self.size();
        (4..size.saturating_sub(1)).map(move |n| Ipv4Addr::from(self.network + n as u32))
    }

    /// How many addresses [`Cidr::assignable`] yields.
    pub fn assignable_count(&self) -> u64 {
        self.size().saturating_sub(5)
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", Ipv4Addr::from(self.network), self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_network_addresses_only() {
        assert_eq!(
            Cidr::parse("10.0.0.0/16").unwrap().to_string(),
            "10.0.0.0/16"
        );
        for bad in [
            "10.0.0.1/16",
            "10.0.0.0",
            "10.0.0.0/33",
            "10.0.0/8",
            "x/8",
            "10.0.0.0/+8",
            "10.0.0.0/",
        ] {
            assert!(Cidr::parse(bad).is_none(), "{bad} must be refused");
        }
    }

    #[test]
    fn subnets_keep_five_addresses_back() {
        let c = Cidr::parse("10.0.1.0/28").unwrap();
        let all: Vec<String> = c.assignable().map(|a| a.to_string()).collect();
        assert_eq!(all.first().unwrap(), "10.0.1.4");
        assert_eq!(all.last().unwrap(), "10.0.1.14");
        assert_eq!(all.len() as u64, c.assignable_count());
        assert_eq!(c.router().to_string(), "10.0.1.1");
    }

    #[test]
    fn containment_and_overlap() {
        let vpc = Cidr::parse("10.0.0.0/16").unwrap();
        let a = Cidr::parse("10.0.1.0/24").unwrap();
        let b = Cidr::parse("10.0.0.0/20").unwrap();
        let out = Cidr::parse("10.1.0.0/24").unwrap();
        assert!(vpc.contains(&a) && vpc.contains(&b) && !vpc.contains(&out));
        assert!(a.overlaps(&b) && b.overlaps(&a) && !a.overlaps(&out));
    }

    proptest! {
        #[test]
        fn overlap_is_symmetric_and_means_a_shared_address(
            a in any::<u32>(), pa in 8u8..=30, b in any::<u32>(), pb in 8u8..=30,
        ) {
            let mk = |n: u32, p: u8| Cidr { network: n & (u32::MAX << (32 - p)), prefix: p };
            let (x, y) = (mk(a, pa), mk(b, pb));
            prop_assert_eq!(x.overlaps(&y), y.overlaps(&x));
            let shared = x.contains_addr(Ipv4Addr::from(y.network)) || y.contains_addr(Ipv4Addr::from(x.network));
            prop_assert_eq!(x.overlaps(&y), shared);
        }
    }
}
