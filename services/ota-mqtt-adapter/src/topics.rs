//! The topic layout: `{prefix}/{vin}/{actions|status|inventory|presence}`.

use crate::MqttError;

pub const DEFAULT_PREFIX: &str = "ota/v1/vehicles";

/// What a vehicle-side topic is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Actions,
    Status,
    Inventory,
    Presence,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Actions => "actions",
            Self::Status => "status",
            Self::Inventory => "inventory",
            Self::Presence => "presence",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "actions" => Self::Actions,
            "status" => Self::Status,
            "inventory" => Self::Inventory,
            "presence" => Self::Presence,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topics {
    prefix: String,
}

impl Topics {
    pub fn new(prefix: &str) -> Result<Self, MqttError> {
        let prefix = prefix.trim_end_matches('/');
        if prefix.is_empty() || prefix.contains(['+', '#']) || prefix.starts_with('$') {
            return Err(MqttError::Config(format!(
                "topic prefix {prefix:?} must be a non-empty topic without wildcards or $"
            )));
        }
        Ok(Self {
            prefix: prefix.to_owned(),
        })
    }

    pub fn topic(&self, vin: &str, kind: Kind) -> String {
        format!("{}/{vin}/{}", self.prefix, kind.as_str())
    }

    /// The filter over every vehicle's topic of this kind.
    pub fn filter(&self, kind: Kind) -> String {
        format!("{}/+/{}", self.prefix, kind.as_str())
    }

    /// The VIN and kind a topic names, if it is one of ours. The VIN is not
    /// validated here.
    pub fn parse<'a>(&self, topic: &'a str) -> Option<(&'a str, Kind)> {
        let rest = topic.strip_prefix(&self.prefix)?.strip_prefix('/')?;
        let (vin, kind) = rest.split_once('/')?;
        if vin.is_empty() || vin.contains(['+', '#', '/']) {
            return None;
        }
        Some((vin, Kind::parse(kind)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_and_parses() {
        let t = Topics::new("ota/v1/vehicles/").unwrap();
        let vin = "WVWZZZE1ZMP000001";
        assert_eq!(
            t.topic(vin, Kind::Actions),
            "ota/v1/vehicles/WVWZZZE1ZMP000001/actions"
        );
        assert_eq!(t.filter(Kind::Status), "ota/v1/vehicles/+/status");
        assert_eq!(
            t.parse(&t.topic(vin, Kind::Presence)),
            Some((vin, Kind::Presence))
        );
        for other in [
            "ota/v1/vehicles/x/other",
            "ota/v1/vehicles//status",
            "ota/v1/vehicles/a/b/status",
            "ota/v2/vehicles/a/status",
            "ota/v1/vehiclesX/a/status",
        ] {
            assert_eq!(t.parse(other), None, "{other}");
        }
        assert!(Topics::new("a/+/b").is_err());
        assert!(Topics::new("").is_err());
    }
}
