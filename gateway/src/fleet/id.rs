//! Fleet hold ids: `NODE:ID`, the holding node's name and its local hold number. The same
//! string on every node, unique in the fleet as long as node names are (a node's local
//! numbers are never reused: [`crate::hold::ids`]).

use super::FleetError;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FleetId {
    pub node: String,
    pub hold: u64,
}

impl FleetId {
    pub fn new(node: &str, hold: u64) -> Self {
        Self {
            node: node.to_string(),
            hold,
        }
    }

    /// `NODE:ID`, or a bare `ID` meaning a hold of `here`.
    pub fn parse(s: &str, here: &str) -> Result<Self, FleetError> {
        let s = s.trim();
        let bad = || FleetError::BadId(crate::hold::printable(s, true));
        let (node, n) = match s.rsplit_once(':') {
            Some((node, n)) => {
                super::config::valid_node(node).map_err(|_| bad())?;
                (node, n)
            }
            None => (here, s),
        };
        if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        let hold = n.parse::<u64>().map_err(|_| bad())?;
        Ok(Self::new(node, hold))
    }
}

impl std::fmt::Display for FleetId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.node, self.hold)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fleet_ids_round_trip_and_bare_numbers_are_local() {
        let id = FleetId::parse("runner-7:17", "x").unwrap();
        assert_eq!(id, FleetId::new("runner-7", 17));
        assert_eq!(id.to_string(), "runner-7:17");
        assert_eq!(
            FleetId::parse("42", "here").unwrap(),
            FleetId::new("here", 42)
        );
        for bad in [
            "", ":1", "a:", "a:b", "a.b:1", "a:-1", "a:1 2", "a:+1", "x:1:2",
        ] {
            assert!(FleetId::parse(bad, "here").is_err(), "{bad}");
        }
    }
}
