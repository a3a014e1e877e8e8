//! What the campaign and action states mean, and their text names: the one
//! place every service, the REST JSON, the CSV, the vehicle payloads, the
//! audit and the database take them from.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::v1::{ActionState, CampaignState};

impl CampaignState {
    /// Every state a campaign can be in (not `Unspecified`).
    pub const ALL: [CampaignState; 7] = [
        Self::Draft,
        Self::Approved,
        Self::Running,
        Self::Paused,
        Self::Completed,
        Self::Aborted,
        Self::Cancelled,
    ];

    /// The text name: the protobuf name in lowercase without its prefix.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unspecified => "unspecified",
            Self::Draft => "draft",
            Self::Approved => "approved",
            Self::Running => "running",
            Self::Paused => "paused",
            Self::Completed => "completed",
            Self::Aborted => "aborted",
            Self::Cancelled => "cancelled",
        }
    }

    /// Launched and not finished: its actions are live.
    pub fn is_active(self) -> bool {
        matches!(self, Self::Running | Self::Paused)
    }

    /// The campaign never changes again.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Completed | Self::Aborted | Self::Cancelled)
    }
}

impl ActionState {
    /// Every state an action can be in (not `Unspecified`), in the order of
    /// its life.
    pub const ALL: [ActionState; 12] = [
        Self::Pending,
        Self::Waiting,
        Self::Staged,
        Self::Delivered,
        Self::Accepted,
        Self::Downloading,
        Self::Installing,
        Self::Succeeded,
        Self::Failed,
        Self::Rejected,
        Self::Cancelled,
        Self::TimedOut,
    ];

    /// The text name: the protobuf name in lowercase without its prefix.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unspecified => "unspecified",
            Self::Pending => "pending",
            Self::Waiting => "waiting",
            Self::Staged => "staged",
            Self::Delivered => "delivered",
            Self::Accepted => "accepted",
            Self::Downloading => "downloading",
            Self::Installing => "installing",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Rejected => "rejected",
            Self::Cancelled => "cancelled",
            Self::TimedOut => "timed_out",
        }
    }

    /// Handed to staging and not finished (in progress): at most one per
    /// (vehicle, ECU).
    pub fn is_open(self) -> bool {
        matches!(
            self,
            Self::Staged | Self::Delivered | Self::Accepted | Self::Downloading | Self::Installing
        )
    }

    pub fn is_final(self) -> bool {
        matches!(
            self,
            Self::Succeeded | Self::Failed | Self::Rejected | Self::Cancelled | Self::TimedOut
        )
    }

    /// Counts against a campaign's failure threshold.
    pub fn is_failure(self) -> bool {
        matches!(self, Self::Failed | Self::Rejected | Self::TimedOut)
    }

    /// The vehicle has seen it (it may be mid-install): pausing a campaign
    /// leaves such actions in place.
    pub fn is_delivered(self) -> bool {
        self.is_open() && self != Self::Staged
    }

    /// A vehicle may report it; the others are the platform's.
    pub fn is_reportable(self) -> bool {
        matches!(
            self,
            Self::Accepted
                | Self::Downloading
                | Self::Installing
                | Self::Succeeded
                | Self::Failed
                | Self::Rejected
        )
    }

    /// A vehicle reporting it is done with the action: the adapters restage
    /// the vehicle after recording one, so its next action is handed over.
    pub fn is_finishing_report(self) -> bool {
        self.is_reportable() && self.is_final()
    }

    /// The states a vehicle may report, in the order of an action's life.
    pub fn reportable() -> impl Iterator<Item = ActionState> {
        Self::ALL.into_iter().filter(|s| s.is_reportable())
    }

    /// A state a vehicle reports, by its text name (HTTP, MQTT).
    pub fn parse_reported(name: &str) -> Result<Self, String> {
        Self::reportable()
            .find(|s| s.as_str() == name)
            .ok_or_else(|| not_reportable(&format!("{name:?}")))
    }

    /// A state a vehicle reports, as the gRPC contract carries it.
    pub fn reported(value: i32) -> Result<Self, String> {
        match Self::try_from(value) {
            Ok(s) if s.is_reportable() => Ok(s),
            Ok(s) => Err(not_reportable(&format!("{:?}", s.as_str()))),
            Err(_) => Err(not_reportable(&value.to_string())),
        }
    }
}

fn not_reportable(shown: &str) -> String {
    let names: Vec<&str> = ActionState::reportable().map(ActionState::as_str).collect();
    format!(
        "unknown state {shown}: expected one of {}",
        names.join(", ")
    )
}

impl FromStr for CampaignState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = Self::ALL.into_iter().map(Self::as_str).collect();
                format!(
                    "unknown campaign state {s:?}: expected one of {}",
                    names.join(", ")
                )
            })
    }
}

impl FromStr for ActionState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| format!("unknown action state {s:?}"))
    }
}

/// Display and serde use the one name `as_str` gives. JSON may carry
/// `unspecified` (a stored campaign whose state this version cannot read is
/// shown with it), so reading JSON takes it back; parsing text does not.
/// The API documents list the same names.
macro_rules! text_form {
    ($t:ty) => {
        impl utoipa::PartialSchema for $t {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                let names = std::iter::once(<$t>::Unspecified)
                    .chain(<$t>::ALL)
                    .map(<$t>::as_str);
                utoipa::openapi::schema::ObjectBuilder::new()
                    .schema_type(utoipa::openapi::schema::Type::String)
                    .enum_values(Some(names))
                    .description(Some(
                        "`unspecified` shows a stored state this version cannot read",
                    ))
                    .into()
            }
        }

        impl utoipa::ToSchema for $t {}

        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl Serialize for $t {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let name = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                if name == <$t>::Unspecified.as_str() {
                    return Ok(<$t>::Unspecified);
                }
                name.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

text_form!(CampaignState);
text_form!(ActionState);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_state_round_trips_through_its_name() {
        for s in CampaignState::ALL {
            assert_eq!(s.as_str().parse::<CampaignState>(), Ok(s));
            assert_eq!(s.to_string(), s.as_str());
            let json = serde_json::to_string(&s).unwrap();
            assert_eq!(json, format!("\"{}\"", s.as_str()));
            assert_eq!(serde_json::from_str::<CampaignState>(&json).unwrap(), s);
            assert_eq!(CampaignState::try_from(i32::from(s)), Ok(s));
        }
        for s in ActionState::ALL {
            assert_eq!(s.as_str().parse::<ActionState>(), Ok(s));
            assert_eq!(s.to_string(), s.as_str());
            let json = serde_json::to_string(&s).unwrap();
            assert_eq!(json, format!("\"{}\"", s.as_str()));
            assert_eq!(serde_json::from_str::<ActionState>(&json).unwrap(), s);
            assert_eq!(ActionState::try_from(i32::from(s)), Ok(s));
        }
        assert_eq!(ActionState::TimedOut.as_str(), "timed_out");
    }

    /// The text name is the protobuf name, lowercase and without its
    /// prefix, and `ALL` holds every value the contract defines but 0.
    #[test]
    fn names_follow_the_protobuf_names() {
        for s in [CampaignState::Unspecified]
            .into_iter()
            .chain(CampaignState::ALL)
        {
            let proto = s.as_str_name().strip_prefix("CAMPAIGN_STATE_").unwrap();
            assert_eq!(s.as_str(), proto.to_lowercase());
        }
        for s in [ActionState::Unspecified]
            .into_iter()
            .chain(ActionState::ALL)
        {
            let proto = s.as_str_name().strip_prefix("ACTION_STATE_").unwrap();
            assert_eq!(s.as_str(), proto.to_lowercase());
        }
        let campaign: Vec<i32> = CampaignState::ALL.into_iter().map(i32::from).collect();
        assert_eq!(campaign, (1..=7).collect::<Vec<_>>());
        assert!(CampaignState::try_from(8).is_err());
        let action: Vec<i32> = ActionState::ALL.into_iter().map(i32::from).collect();
        assert_eq!(action, (1..=12).collect::<Vec<_>>());
        assert!(ActionState::try_from(13).is_err());
    }

    #[test]
    fn unknown_names_are_refused_with_the_accepted_ones() {
        assert_eq!(
            "bogus".parse::<CampaignState>().unwrap_err(),
            "unknown campaign state \"bogus\": expected one of draft, approved, running, \
             paused, completed, aborted, cancelled"
        );
        assert!("unspecified".parse::<CampaignState>().is_err());
        assert!("".parse::<CampaignState>().is_err());
        assert_eq!(
            "done".parse::<ActionState>().unwrap_err(),
            "unknown action state \"done\""
        );
        assert!("unspecified".parse::<ActionState>().is_err());
        assert!("TimedOut".parse::<ActionState>().is_err());
        assert!(serde_json::from_str::<ActionState>("\"done\"").is_err());
        assert_eq!(
            serde_json::from_str::<CampaignState>("\"unspecified\"").unwrap(),
            CampaignState::Unspecified
        );
    }

    #[test]
    fn campaign_classes() {
        use CampaignState::*;
        let active: Vec<_> = CampaignState::ALL
            .into_iter()
            .filter(|s| s.is_active())
            .collect();
        assert_eq!(active, [Running, Paused]);
        let finals: Vec<_> = CampaignState::ALL
            .into_iter()
            .filter(|s| s.is_final())
            .collect();
        assert_eq!(finals, [Completed, Aborted, Cancelled]);
        assert!(!Unspecified.is_active() && !Unspecified.is_final());
    }

    #[test]
    fn action_classes() {
        use ActionState::*;
        let of = |f: fn(ActionState) -> bool| -> Vec<&str> {
            ActionState::ALL
                .into_iter()
                .filter(|s| f(*s))
                .map(ActionState::as_str)
                .collect()
        };
        assert_eq!(
            of(ActionState::is_open),
            [
                "staged",
                "delivered",
                "accepted",
                "downloading",
                "installing"
            ]
        );
        assert_eq!(
            of(ActionState::is_delivered),
            ["delivered", "accepted", "downloading", "installing"]
        );
        assert_eq!(
            of(ActionState::is_final),
            ["succeeded", "failed", "rejected", "cancelled", "timed_out"]
        );
        assert_eq!(
            of(ActionState::is_failure),
            ["failed", "rejected", "timed_out"]
        );
        assert_eq!(
            of(ActionState::is_reportable),
            [
                "accepted",
                "downloading",
                "installing",
                "succeeded",
                "failed",
                "rejected"
            ]
        );
        assert_eq!(
            of(ActionState::is_finishing_report),
            ["succeeded", "failed", "rejected"]
        );
        let before_staging = of(|s| !s.is_open() && !s.is_final());
        assert_eq!(before_staging, ["pending", "waiting"]);
        for f in [
            ActionState::is_open,
            ActionState::is_final,
            ActionState::is_failure,
            ActionState::is_delivered,
            ActionState::is_reportable,
            ActionState::is_finishing_report,
        ] {
            assert!(!f(Unspecified));
        }
        assert!(ActionState::reportable().eq([
            Accepted,
            Downloading,
            Installing,
            Succeeded,
            Failed,
            Rejected
        ]));
    }

    #[test]
    fn reported_states_are_checked_by_name_and_by_value() {
        assert_eq!(
            ActionState::parse_reported("timed_out").unwrap_err(),
            ActionState::parse_reported("done")
                .unwrap_err()
                .replace("\"done\"", "\"timed_out\"")
        );
        assert_eq!(
            ActionState::parse_reported("done").unwrap_err(),
            "unknown state \"done\": expected one of accepted, downloading, installing, \
             succeeded, failed, rejected"
        );
        for s in ActionState::ALL {
            assert_eq!(
                ActionState::parse_reported(s.as_str()).is_ok(),
                s.is_reportable()
            );
            assert_eq!(
                ActionState::reported(s.into()).ok(),
                Some(s).filter(|s| s.is_reportable())
            );
        }
        assert!(ActionState::reported(0)
            .unwrap_err()
            .starts_with("unknown state \"unspecified\": expected one of accepted"));
        assert!(ActionState::reported(42)
            .unwrap_err()
            .starts_with("unknown state 42: expected one of accepted"));
        assert!(ActionState::reported(ActionState::Staged.into())
            .unwrap_err()
            .starts_with("unknown state \"staged\""));
    }
}
